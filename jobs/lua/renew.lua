-- A worker renews the leases of all its running attempts and its heartbeat, in one step.
-- ARGV: now, lease_s, worker name, model, heartbeat json, then (job id, fence) pairs.
-- Returns the ids of jobs this worker no longer owns (it stops them).
local now, lease_s, worker, model = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3], ARGV[4]
local lost = {}
for i = 6, #ARGV, 2 do
  local id = ARGV[i]
  local attempt, status = unpack(redis.call('HMGET', job_key(id), 'attempt', 'status'))
  if attempt == ARGV[i + 1] and status == 'running' then
    redis.call('ZADD', LEASES, now + lease_s, id)
  else
    lost[#lost + 1] = id
  end
end
redis.call('ZADD', P .. ':workers:' .. model, now + lease_s, worker)
redis.call('ZREMRANGEBYSCORE', P .. ':workers:' .. model, '-inf', now)
redis.call('SET', P .. ':worker:' .. worker, ARGV[5], 'EX', math.ceil(lease_s))
return lost
