-- The reconciler ends queued jobs whose deadline passed (a job's own, or its batch's window):
-- they never start late, and their readers and batches learn it now, not when a worker would
-- have reached them. ARGV: now, ttl, limit. Returns how many expired.
local now, ttl = ARGV[1], ARGV[2]
local due = redis.call('ZRANGEBYSCORE', DEADLINES, '-inf', now, 'LIMIT', 0, tonumber(ARGV[3]))
local expired = 0
for _, id in ipairs(due) do
  redis.call('ZREM', DEADLINES, id)
  local K, chan, bchan = keys_of(id)
  if redis.call('HGET', K[1], 'status') == 'queued' then
    finish_job(K, 'expired', EMPTY_EXPIRED, now, ttl, chan, bchan)
    expired = expired + 1
  end
end
return expired
