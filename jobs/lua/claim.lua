-- Worker claims a job for one attempt. ARGV: chan, bchan, now, ttl, max_attempts, worker name
-- Returns {'claimed', attempt} | {'skip', status} | {'missing'}
local chan, bchan, now, ttl, max_attempts = ARGV[1], ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5])
local status, cancel, expires_at = unpack(redis.call('HMGET', KEYS[1], 'status', 'cancel', 'expires_at'))
if not status then return {'missing'} end
if TERMINAL[status] then return {'skip', status} end
local empty = '{"text":"","finish_reason":"cancelled","usage":{"prompt_tokens":0,"completion_tokens":0,"total_tokens":0},"timings":null,"error":null}'
if cancel == '1' then
  finish_job('cancelled', empty, now, ttl, chan, bchan)
  return {'skip', 'cancelled'}
end
if expires_at and expires_at ~= '' and tonumber(expires_at) < tonumber(now) then
  finish_job('expired', '{"text":"","finish_reason":null,"usage":null,"timings":null,"error":null}', now, ttl, chan, bchan)
  return {'skip', 'expired'}
end
local attempt = redis.call('HINCRBY', KEYS[1], 'attempt', 1)
if attempt > max_attempts then
  finish_job('failed', '{"text":"","finish_reason":"error","usage":null,"timings":null,"error":{"type":"AttemptsExceededError","message":"the job was started ' ..
    max_attempts .. ' times and its worker was lost each time"}}', now, ttl, chan, bchan)
  return {'skip', 'failed'}
end
if attempt > 1 then
  redis.call('HSET', KEYS[1], 'completion_tokens', 0)
  append(KEYS[1], KEYS[2], chan, 'reset', '{"attempt":' .. attempt .. '}')
end
redis.call('HSET', KEYS[1], 'status', 'running', 'started_at', now, 'worker', ARGV[6])
append(KEYS[1], KEYS[2], chan, 'status', '{"status":"running","at":' .. now .. ',"attempt":' .. attempt .. '}')
return {'claimed', attempt}
