-- Shared helpers, prepended to every tokenq script when it is loaded (jobs/store.py).
-- KEYS convention of the per-job scripts: [1] job hash, [2] job stream, [3] batch hash, [4] batch
-- stream, [5] batch job list (3 to 5 are the job's own keys again when it belongs to no batch),
-- [6] the tenant's in-flight counter. Scripts that find their jobs themselves (claim_next,
-- requeue) build the same table with keys_of(); key names are those of jobs/keys.py.

local TERMINAL = {succeeded = true, failed = true, cancelled = true, expired = true}
local P = 'tokenq'

local function job_key(id) return P .. ':job:' .. id end
local function pending_key(model) return P .. ':pending:' .. model end
local function tenant_jobs_key(tenant) return P .. ':tenant:' .. tenant .. ':jobs' end
-- How many of a tenant's latest single jobs GET /v1/jobs can list.
local TENANT_JOBS_KEPT = 1000
local function claims_key(model) return P .. ':claims:' .. model end
-- Claims are counted per 10-second window; this many windows are kept (position.lua reads 6).
local CLAIM_WINDOWS = 8
local function suspects_key(model) return P .. ':suspects:' .. model end
local LEASES = P .. ':leases'
local DEADLINES = P .. ':deadlines'
-- The service's counters (jobs/metrics.py reads them; field `<name>|<label values>`).
local METRICS = P .. ':metrics'
-- Lanes in the order a worker serves them: interactive before batch, then by priority.
local LANES = {'interactive:high', 'interactive:normal', 'interactive:low',
               'batch:high', 'batch:normal', 'batch:low'}
local function lane_key(model, lane, priority) return P .. ':lane:' .. model .. ':' .. lane .. ':' .. priority end

-- The KEYS table of the job `id` (the convention above) and its two channels.
local function keys_of(id)
  local tenant, batch_id = unpack(redis.call('HMGET', job_key(id), 'tenant', 'batch_id'))
  local k = {job_key(id), job_key(id) .. ':events'}
  local bchan = ''
  if batch_id and batch_id ~= '' then
    local b = P .. ':batch:' .. batch_id
    k[3], k[4], k[5] = b, b .. ':events', b .. ':jobs'
    bchan = P .. ':chan:batch:' .. batch_id
  else
    k[3], k[4], k[5] = k[1], k[2], k[1]
  end
  k[6] = P .. ':tenant:' .. (tenant or '') .. ':inflight'
  return k, P .. ':chan:job:' .. id, bchan
end

-- Append one event to a log (hash counter `seq`, stream entry `<seq>-0`) and publish it.
local function append(hash, stream, channel, etype, data)
  local seq = redis.call('HINCRBY', hash, 'seq', 1)
  local payload = '{"seq":' .. seq .. ',"type":"' .. etype .. '","data":' .. data .. '}'
  redis.call('XADD', stream, seq .. '-0', 'e', payload)
  redis.call('PUBLISH', channel, payload)
  return seq
end

local function batch_counts(bkey)
  local c = redis.call('HMGET', bkey, 'total', 'succeeded', 'failed', 'cancelled', 'expired')
  local n = {}
  for i = 1, 5 do n[i] = tonumber(c[i]) or 0 end
  return n
end

local function counts_json(n)
  return '{"total":' .. n[1] .. ',"succeeded":' .. n[2] .. ',"failed":' .. n[3] ..
         ',"cancelled":' .. n[4] .. ',"expired":' .. n[5] .. '}'
end

local EMPTY_CANCELLED = '{"text":"","finish_reason":"cancelled","usage":{"prompt_tokens":0,"completion_tokens":0,"total_tokens":0},"timings":null,"error":null}'
local EMPTY_EXPIRED = '{"text":"","finish_reason":null,"usage":null,"timings":null,"error":null}'

local function attempts_exceeded(max_attempts)
  return '{"text":"","finish_reason":"error","usage":null,"timings":null,"error":{"type":"AttemptsExceededError","message":"the job was started ' ..
    max_attempts .. ' times and its worker was lost each time"}}'
end

-- Queue a webhook event of `etype` about `object_id` (a batch or job id) if the tenant's webhook
-- takes that type (keys.tenant_webhook_events, kept by the workers); once per object and type.
-- jobs/webhooks.py has the event's shape; worker/webhooks.py delivers it.
local function queue_webhook(tenant, etype, object_id, now)
  local subs = redis.call('GET', P .. ':tenant:' .. (tenant or '') .. ':webhook_events')
  if not subs or not string.find(',' .. subs .. ',', ',' .. etype .. ',', 1, true) then return end
  local event_id = 'evt_' .. object_id
  local key = P .. ':webhook:' .. event_id
  if redis.call('EXISTS', key) == 1 then return end
  local body = '{"id":"' .. event_id .. '","object":"event","created_at":' .. math.floor(tonumber(now)) ..
    ',"type":"' .. etype .. '","data":{"id":"' .. object_id .. '"}}'
  redis.call('HSET', key, 'tenant', tenant, 'type', etype, 'body', body, 'created_at', now,
    'attempt', 0, 'state', 'pending')
  redis.call('ZADD', P .. ':webhooks:due', now, event_id)
end

-- A response's webhook event type for its job's final status (jobs/webhooks.py RESPONSE_EVENTS).
local function response_event(status, result_json)
  if status == 'succeeded' then
    if string.find(result_json, '"finish_reason":"length"', 1, true) then return 'response.incomplete' end
    return 'response.completed'
  end
  if status == 'cancelled' then return 'response.cancelled' end
  return 'response.failed'
end

-- Move a job to a terminal status once, write its result, and roll it into its batch.
-- K is the job's KEYS table; result_json is its result object: {text, finish_reason, usage,
-- timings, error}. The job leaves every scheduling set (pending, suspects, leases).
local function finish_job(K, status, result_json, now, ttl, chan, bchan)
  local job_id, batch_id, custom_id, idx, model, tenant, lane, priority, notify = unpack(redis.call('HMGET', K[1],
    'id', 'batch_id', 'custom_id', 'idx', 'model', 'tenant', 'lane', 'priority', 'notify'))
  redis.call('HSET', K[1], 'status', status, 'finished_at', now, 'result', result_json)
  append(K[1], K[2], chan, 'status', '{"status":"' .. status .. '","at":' .. now .. '}')
  local final_type = 'done'
  if status == 'failed' then final_type = 'error' end
  append(K[1], K[2], chan, final_type, '{"status":"' .. status .. '","result":' .. result_json .. '}')
  redis.call('EXPIRE', K[1], ttl)
  redis.call('EXPIRE', K[2], ttl)
  redis.call('ZREM', LEASES, job_id)
  redis.call('ZREM', DEADLINES, job_id)
  redis.call('HINCRBY', METRICS, 'jobs_finished|' .. (model or '') .. '|' .. (lane or '') .. '|' .. status, 1)
  if model and model ~= '' then
    redis.call('ZREM', pending_key(model), job_id)
    redis.call('ZREM', suspects_key(model), job_id)
    if lane and lane ~= '' then
      redis.call('ZREM', lane_key(model, lane, priority) .. ':' .. tenant, job_id)
    end
  end
  if redis.call('DECR', K[6]) < 0 then redis.call('SET', K[6], 0) end
  -- The tokens the job reserved and did not generate go back to its tenant's bucket (if any).
  local bucket = P .. ':tenant:' .. (tenant or '') .. ':rate:tokens'
  local reserved, generated = unpack(redis.call('HMGET', K[1], 'max_tokens', 'completion_tokens'))
  local unused = (tonumber(reserved) or 0) - (tonumber(generated) or 0)
  if unused > 0 and redis.call('EXISTS', bucket) == 1 then
    local lvl, cap = unpack(redis.call('HMGET', bucket, 'level', 'cap'))
    redis.call('HSET', bucket, 'level', math.min(tonumber(cap), tonumber(lvl) + unused))
  end
  if notify == 'response' then queue_webhook(tenant, response_event(status, result_json), job_id, now) end
  if not batch_id or batch_id == '' then return end
  redis.call('HINCRBY', K[3], status, 1)
  local n = batch_counts(K[3])
  append(K[3], K[4], bchan, 'job',
    '{"job_id":"' .. job_id .. '","custom_id":' .. cjson.encode(custom_id or '') .. ',"index":' .. idx ..
    ',"status":"' .. status .. '","counts":' .. counts_json(n) .. '}')
  if n[2] + n[3] + n[4] + n[5] >= n[1] then
    local bstatus, window = unpack(redis.call('HMGET', K[3], 'status', 'expires_at'))
    local final = 'completed'
    if bstatus == 'cancelling' then
      final = 'cancelled'
    elseif n[5] > 0 and window and window ~= '' and tonumber(window) <= tonumber(now) then
      final = 'expired'  -- OpenAI's word for a batch whose window ran out before all of it ran
    end
    redis.call('HSET', K[3], 'status', final, 'finalizing_at', now, final .. '_at', now)
    redis.call('HINCRBY', METRICS, 'batches_finished|' .. final, 1)
    queue_webhook(tenant, 'batch.' .. final, batch_id, now)
    append(K[3], K[4], bchan, 'status', '{"status":"' .. final .. '","at":' .. now .. '}')
    append(K[3], K[4], bchan, 'done', '{"status":"' .. final .. '","counts":' .. counts_json(n) .. '}')
    for i = 3, 5 do redis.call('EXPIRE', K[i], ttl) end
  end
end
