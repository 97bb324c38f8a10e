-- Worker writes the final result of its attempt, once. ARGV: chan, bchan, now, ttl, fence, status, result_json
-- Returns 1 when written, 0 when the job was already final or another attempt owns it.
local attempt, status = unpack(redis.call('HMGET', KEYS[1], 'attempt', 'status'))
if attempt ~= ARGV[5] or status ~= 'running' then return 0 end
finish_job(KEYS, ARGV[6], ARGV[7], ARGV[3], ARGV[4], ARGV[1], ARGV[2])
return 1
