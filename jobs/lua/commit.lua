-- The API makes written jobs live, all at once: each takes its place in its model's line and
-- loses the TTL it was written with; their reservation becomes in-flight count.
-- KEYS[1] the tenant's in-flight counter, KEYS[2] its reservations.
-- ARGV: reservation member, batch job list key ('' for none), then (job id, model) pairs.
local n = (#ARGV - 2) / 2
local place = redis.call('INCRBY', P .. ':pending:seq', math.max(n, 1)) - n
for i = 3, #ARGV, 2 do
  local id, model = ARGV[i], ARGV[i + 1]
  place = place + 1
  redis.call('PERSIST', job_key(id))
  redis.call('PERSIST', job_key(id) .. ':events')
  redis.call('HSET', job_key(id), 'place', place)
  redis.call('ZADD', pending_key(model), place, id)
end
if ARGV[2] ~= '' then redis.call('PERSIST', ARGV[2]) end
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('INCRBY', KEYS[1], n)
return n
