-- The reconciler puts jobs whose lease lapsed (their worker is gone) back in line, as suspects,
-- or fails those whose every attempt lost its worker. ARGV: now, ttl, max_attempts, limit
-- Returns {model, n, model, n, ...}: jobs put back per model (each needs a ticket).
local now, ttl, max_attempts = ARGV[1], ARGV[2], tonumber(ARGV[3])
local due = redis.call('ZRANGEBYSCORE', LEASES, '-inf', now, 'LIMIT', 0, tonumber(ARGV[4]))
local per_model = {}
for _, id in ipairs(due) do
  redis.call('ZREM', LEASES, id)
  local K, chan, bchan = keys_of(id)
  local status, attempt, model, place, expires_at = unpack(redis.call('HMGET', K[1], 'status', 'attempt', 'model', 'place', 'expires_at'))
  if status == 'running' then
    if tonumber(attempt) >= max_attempts then
      finish_job(K, 'failed', attempts_exceeded(max_attempts), now, ttl, chan, bchan)
    else
      redis.call('HSET', K[1], 'status', 'queued', 'requeued_at', now)
      redis.call('HINCRBY', K[1], 'lost', 1)
      append(K[1], K[2], chan, 'status', '{"status":"queued","at":' .. now .. ',"reason":"worker_lost"}')
      redis.call('ZADD', suspects_key(model), tonumber(place) or 0, id)
      if expires_at and expires_at ~= '' then redis.call('ZADD', DEADLINES, expires_at, id) end
      per_model[model] = (per_model[model] or 0) + 1
    end
  end
end
local reply = {}
for model, n in pairs(per_model) do reply[#reply + 1] = model; reply[#reply + 1] = n end
return reply
