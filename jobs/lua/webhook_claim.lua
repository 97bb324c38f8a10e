-- A worker takes webhook events whose delivery is due, for one delivery attempt each: each is
-- pushed a lease ahead (so it comes due again if this worker dies before it settles it) and its
-- attempt counted. ARGV: now, lease_s, limit.
-- Returns {event id, its hash as field, value, ..., '' (end of event), ...}.
local now, lease_s, limit = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local due = P .. ':webhooks:due'
local reply = {}
for _, id in ipairs(redis.call('ZRANGEBYSCORE', due, '-inf', now, 'LIMIT', 0, limit)) do
  local key = P .. ':webhook:' .. id
  if redis.call('EXISTS', key) == 0 then
    redis.call('ZREM', due, id)
  else
    redis.call('ZADD', due, now + lease_s, id)
    redis.call('HINCRBY', key, 'attempt', 1)
    reply[#reply + 1] = id
    for _, v in ipairs(redis.call('HGETALL', key)) do reply[#reply + 1] = v end
    reply[#reply + 1] = ''
  end
end
return reply
