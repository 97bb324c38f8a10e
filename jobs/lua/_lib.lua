-- Shared helpers, prepended to every tokenq script when it is loaded (jobs/store.py).
-- KEYS convention for every script: [1] job hash, [2] job stream, [3] batch hash, [4] batch stream,
-- [5] batch job list (3 to 5 are the job's own keys again when it belongs to no batch),
-- [6] the tenant's in-flight counter.

local TERMINAL = {succeeded = true, failed = true, cancelled = true, expired = true}

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

-- Move a job to a terminal status once, write its result, and roll it into its batch.
-- result_json is the job's result object: {text, finish_reason, usage, timings, error}.
local function finish_job(status, result_json, now, ttl, chan, bchan)
  local job_id, batch_id, custom_id, idx = unpack(redis.call('HMGET', KEYS[1], 'id', 'batch_id', 'custom_id', 'idx'))
  redis.call('HSET', KEYS[1], 'status', status, 'finished_at', now, 'result', result_json)
  append(KEYS[1], KEYS[2], chan, 'status', '{"status":"' .. status .. '","at":' .. now .. '}')
  local final_type = 'done'
  if status == 'failed' then final_type = 'error' end
  append(KEYS[1], KEYS[2], chan, final_type, '{"status":"' .. status .. '","result":' .. result_json .. '}')
  redis.call('EXPIRE', KEYS[1], ttl)
  redis.call('EXPIRE', KEYS[2], ttl)
  if redis.call('DECR', KEYS[6]) < 0 then redis.call('SET', KEYS[6], 0) end
  if not batch_id or batch_id == '' then return end
  redis.call('HINCRBY', KEYS[3], status, 1)
  local n = batch_counts(KEYS[3])
  append(KEYS[3], KEYS[4], bchan, 'job',
    '{"job_id":"' .. job_id .. '","custom_id":' .. cjson.encode(custom_id or '') .. ',"index":' .. idx ..
    ',"status":"' .. status .. '","counts":' .. counts_json(n) .. '}')
  if n[2] + n[3] + n[4] + n[5] >= n[1] then
    local bstatus = redis.call('HGET', KEYS[3], 'status')
    local final = 'completed'
    if bstatus == 'cancelling' then final = 'cancelled' end
    redis.call('HSET', KEYS[3], 'status', final, 'finalizing_at', now, final .. '_at', now)
    append(KEYS[3], KEYS[4], bchan, 'status', '{"status":"' .. final .. '","at":' .. now .. '}')
    append(KEYS[3], KEYS[4], bchan, 'done', '{"status":"' .. final .. '","counts":' .. counts_json(n) .. '}')
    for i = 3, 5 do redis.call('EXPIRE', KEYS[i], ttl) end
  end
end
