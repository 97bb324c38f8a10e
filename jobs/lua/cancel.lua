-- API cancels a job. ARGV: chan, bchan, now, ttl
-- Returns 'cancelled' (was queued), 'cancelling' (running: stops at its next token), the terminal
-- status it already had, or 'missing'.
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return 'missing' end
if TERMINAL[status] then return status end
if status == 'queued' then
  finish_job(KEYS, 'cancelled', EMPTY_CANCELLED, ARGV[3], ARGV[4], ARGV[1], ARGV[2])
  return 'cancelled'
end
redis.call('HSET', KEYS[1], 'cancel', '1')
return 'cancelling'
