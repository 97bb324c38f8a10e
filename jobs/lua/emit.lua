-- Worker appends events of a running attempt.
-- ARGV: chan, fence, completion_tokens, the completion_tokens this attempt wrote last ('' = do
-- not check), the highest seq it wrote ('' = none; the log's seq goes on from above it), then
-- (type, data) pairs.
-- Returns {code, seq}: the log's last seq, and code 0 to go on, 1 when cancel was requested, -1
-- when this attempt no longer owns the job, -2 when the log lacks events this attempt wrote
-- (Redis restarted on an AOF that lost its last second): then nothing is appended, and the worker
-- writes the attempt's text again after a reset, above every seq it handed out.
local attempt, status, cancel, written, seq = unpack(redis.call('HMGET', KEYS[1], 'attempt', 'status', 'cancel', 'completion_tokens', 'seq'))
if attempt ~= ARGV[2] or status ~= 'running' then return {-1, tonumber(seq) or 0} end
if ARGV[4] ~= '' and (written or '0') ~= ARGV[4] then return {-2, tonumber(seq) or 0} end
if ARGV[5] ~= '' and tonumber(ARGV[5]) > (tonumber(seq) or 0) then
  redis.call('HSET', KEYS[1], 'seq', ARGV[5])
end
local last = 0
for i = 6, #ARGV, 2 do
  last = append(KEYS[1], KEYS[2], ARGV[1], ARGV[i], ARGV[i + 1])
end
redis.call('HSET', KEYS[1], 'completion_tokens', ARGV[3])
if cancel == '1' then return {1, last} end
return {0, last}
