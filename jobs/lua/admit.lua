-- Admit n more jobs of a tenant, or refuse them, in one step (a check then an increment from
-- the API would let concurrent submits past the limit).
-- Unlike the job scripts: KEYS[1] the tenant's in-flight counter. ARGV: n, limit.
-- Returns -1 when admitted (the counter is up by n), else the count that n more would pass.
local n = tonumber(ARGV[1])
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if current + n > tonumber(ARGV[2]) then
  return current
end
redis.call('INCRBY', KEYS[1], n)
return -1
