-- Worker appends events of a running attempt. ARGV: chan, fence, completion_tokens, (type, data)...
-- Returns 0 to go on, 1 when cancel was requested, -1 when this attempt no longer owns the job.
local attempt, status, cancel = unpack(redis.call('HMGET', KEYS[1], 'attempt', 'status', 'cancel'))
if attempt ~= ARGV[2] or status ~= 'running' then return -1 end
for i = 4, #ARGV, 2 do
  append(KEYS[1], KEYS[2], ARGV[1], ARGV[i], ARGV[i + 1])
end
redis.call('HSET', KEYS[1], 'completion_tokens', ARGV[3])
if cancel == '1' then return 1 end
return 0
