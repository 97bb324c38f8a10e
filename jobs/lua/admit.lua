-- Admit n more jobs of a tenant, or refuse them, in one step (a check then an increment from
-- the API would let concurrent submits past the limit). Admitted jobs are a reservation until
-- commit.lua writes them: an API that dies in between gives them back when it lapses.
-- KEYS[1] the tenant's in-flight counter, KEYS[2] its reservations.
-- ARGV: n, limit, now, reservation id, reservation ttl_s.
-- Returns -1 when admitted, else the count that n more would pass.
local n, now = tonumber(ARGV[1]), tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
for _, member in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do
  current = current + tonumber(string.match(member, ':(%d+)$'))
end
if current + n > tonumber(ARGV[2]) then
  return current
end
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[5]), ARGV[4] .. ':' .. n)
return -1
