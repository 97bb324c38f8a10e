-- The API makes written jobs live, all at once: each takes its place in its model's line (and in
-- its lane, priority and tenant's line, for fair share) and loses the TTL it was written with;
-- their reservation becomes in-flight count.
-- A single job (not in a batch) also joins its tenant's list of latest jobs (GET /v1/jobs).
-- KEYS[1] the tenant's in-flight counter, KEYS[2] its reservations.
-- ARGV: reservation member, batch job list key ('' for none), tenant, then per job: id, model,
-- lane, priority, expires_at ('' for none).
local tenant = ARGV[3]
local n = (#ARGV - 3) / 5
local place = redis.call('INCRBY', P .. ':pending:seq', math.max(n, 1)) - n
for i = 4, #ARGV, 5 do
  local id, model, lane, priority, expires_at = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4]
  place = place + 1
  redis.call('PERSIST', job_key(id))
  redis.call('PERSIST', job_key(id) .. ':events')
  redis.call('HSET', job_key(id), 'place', place)
  redis.call('ZADD', pending_key(model), place, id)
  local lkey = lane_key(model, lane, priority)
  redis.call('ZADD', lkey .. ':' .. tenant, place, id)
  if not redis.call('ZSCORE', lkey, tenant) then
    -- A tenant that starts waiting joins at the lowest virtual time of those waiting: no credit
    -- for the time it had nothing queued, and no debt either.
    local lowest = redis.call('ZRANGE', lkey, 0, 0, 'WITHSCORES')
    redis.call('ZADD', lkey, tonumber(lowest[2]) or 0, tenant)
  end
  if expires_at ~= '' then redis.call('ZADD', DEADLINES, expires_at, id) end
  redis.call('HINCRBY', METRICS, 'jobs_submitted|' .. model .. '|' .. lane, 1)
  if ARGV[2] == '' then redis.call('ZADD', tenant_jobs_key(tenant), place, id) end
end
if ARGV[2] == '' then
  redis.call('ZREMRANGEBYRANK', tenant_jobs_key(tenant), 0, -(TENANT_JOBS_KEPT + 1))
else
  redis.call('HINCRBY', METRICS, 'batches_submitted', 1)
end
if ARGV[2] ~= '' then redis.call('PERSIST', ARGV[2]) end
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('INCRBY', KEYS[1], n)
return n
