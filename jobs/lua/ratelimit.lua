-- Per-tenant rate limits as two token buckets (requests and tokens per minute), checked and
-- taken together: a request passes only if both have room. Unlike the job scripts:
-- KEYS[1] the requests bucket, KEYS[2] the tokens bucket (hashes: level, at, cap).
-- ARGV: now, requests per minute ('' = unlimited), tokens per minute ('' = unlimited), tokens
-- this request reserves (prompt + max_tokens of all its jobs).
-- Returns {admitted (1|0), requests left, tokens left, seconds until the requests bucket is
-- full, seconds until the tokens bucket is full, seconds to wait before retrying} as strings
-- (-1 for an unlimited bucket).
local now, tokens = tonumber(ARGV[1]), tonumber(ARGV[4])

local function level(key, cap)
  local lvl, at = unpack(redis.call('HMGET', key, 'level', 'at'))
  lvl, at = tonumber(lvl) or cap, tonumber(at) or now
  return math.min(cap, lvl + math.max(0, now - at) * cap / 60)
end

local caps = {tonumber(ARGV[2]), tonumber(ARGV[3])}
local want = {1, tokens}
local levels, wait = {}, 0
for i = 1, 2 do
  if caps[i] then
    levels[i] = level(KEYS[i], caps[i])
    if levels[i] < want[i] then
      wait = math.max(wait, (want[i] - levels[i]) * 60 / caps[i])
    end
  end
end
local admitted = wait == 0
local reply = {admitted and '1' or '0'}
for i = 1, 2 do
  if caps[i] then
    if admitted then
      levels[i] = levels[i] - want[i]
      redis.call('HSET', KEYS[i], 'level', levels[i], 'at', now, 'cap', caps[i])
      redis.call('EXPIRE', KEYS[i], 120)
    end
    reply[#reply + 1] = tostring(math.floor(math.max(0, levels[i])))
  else
    reply[#reply + 1] = '-1'
  end
end
for i = 1, 2 do
  if caps[i] then
    reply[#reply + 1] = tostring((caps[i] - math.max(0, levels[i])) * 60 / caps[i])
  else
    reply[#reply + 1] = '-1'
  end
end
reply[#reply + 1] = tostring(wait)
return reply
