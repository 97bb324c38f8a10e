-- Queue one webhook event (a batch that failed before any job ran: no job's end announces it).
-- ARGV: tenant, event type, the batch or job id, now. See queue_webhook in _lib.lua.
queue_webhook(ARGV[1], ARGV[2], ARGV[3], ARGV[4])
return 1
