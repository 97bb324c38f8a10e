-- A tenant's storage quota for uploaded files: what it stores, counted and checked in one step
-- (a check then an add from the API would let concurrent uploads past the quota). Files expire
-- by themselves, so each is counted until the time it expires (its score) and dropped here once
-- that has passed; a deleted file is removed at once.
-- KEYS[1] the tenant's files (sorted set, member -> expires at), KEYS[2] their sizes (hash,
-- member -> bytes), KEYS[3] the sum of the sizes.
-- ARGV[1] the step, ARGV[2] now, then the step's own:
--   admit  member, bytes, lapses at, max bytes, max files: count an upload about to be stored
--          (member `admit:<id>`, dropped by `remove` once the file is, or when it lapses) unless
--          that passes a quota. Returns {1}, or {0, files, bytes, seconds until enough expire}.
--   add    member, bytes, expires at: count a stored file (no check: it was admitted). Returns 1.
--   remove member: stop counting it (a deleted file, a used or failed admission). Returns 1 or 0.
local step, now = ARGV[1], tonumber(ARGV[2])
local total = tonumber(redis.call('GET', KEYS[3]) or '0')

local function drop(member)
  local size = tonumber(redis.call('HGET', KEYS[2], member) or '0')
  total = total - size
  redis.call('HDEL', KEYS[2], member)
  return redis.call('ZREM', KEYS[1], member)
end

for _, member in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)) do
  drop(member)
end

local result = 1
if step == 'admit' then
  local bytes, max_bytes, max_files = tonumber(ARGV[4]), tonumber(ARGV[6]), tonumber(ARGV[7])
  local files = redis.call('ZCARD', KEYS[1])
  if files + 1 > max_files or total + bytes > max_bytes then
    -- Waiting helps once enough of the soonest-expiring members are gone.
    local wait, count, stored = 0, files, total
    local members = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
    for i = 1, #members, 2 do
      count = count - 1
      stored = stored - tonumber(redis.call('HGET', KEYS[2], members[i]) or '0')
      wait = tonumber(members[i + 1]) - now
      if count + 1 <= max_files and stored + bytes <= max_bytes then
        break
      end
    end
    result = {0, files, total, tostring(math.max(0, wait))}
  else
    redis.call('ZADD', KEYS[1], ARGV[5], ARGV[3])
    redis.call('HSET', KEYS[2], ARGV[3], bytes)
    total = total + bytes
    result = {1}
  end
elseif step == 'add' then
  if redis.call('ZSCORE', KEYS[1], ARGV[3]) then
    drop(ARGV[3])
  end
  redis.call('ZADD', KEYS[1], ARGV[5], ARGV[3])
  redis.call('HSET', KEYS[2], ARGV[3], tonumber(ARGV[4]))
  total = total + tonumber(ARGV[4])
elseif step == 'remove' then
  result = drop(ARGV[3])
else
  return redis.error_reply('file_quota.lua: unknown step ' .. tostring(step))
end

-- The three keys live as long as the last member counted in them.
local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
if #last == 0 then
  redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
else
  redis.call('SET', KEYS[3], total)
  local at = math.ceil(tonumber(last[2])) + 1
  for i = 1, 3 do
    redis.call('EXPIREAT', KEYS[i], at)
  end
end
return result
