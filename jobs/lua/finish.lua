-- Worker writes the final result of its attempt, once. ARGV: chan, bchan, now, ttl, fence, status,
-- result_json, then (metrics field, increment) pairs the attempt adds to the service's metrics
-- (jobs/metrics.py), counted only with the result they describe.
-- Returns 1 when written, 0 when the job was already final or another attempt owns it.
local attempt, status = unpack(redis.call('HMGET', KEYS[1], 'attempt', 'status'))
if attempt ~= ARGV[5] or status ~= 'running' then return 0 end
finish_job(KEYS, ARGV[6], ARGV[7], ARGV[3], ARGV[4], ARGV[1], ARGV[2])
for i = 8, #ARGV, 2 do redis.call('HINCRBYFLOAT', METRICS, ARGV[i], ARGV[i + 1]) end
return 1
