-- A tenant's Idempotency-Key, bound to the hash of the request that first sent it. The record is
-- JSON {state, sha256, batch_id}: `pending` while that request creates its batch (a short TTL the
-- creator refreshes, so it lapses by itself if the creator dies), `done` once it has (kept as
-- long as results). A record from before hashes (a bare batch id) counts as `done`, any body.
-- KEYS[1] the record (keys.idempotency).
-- ARGV[1] the step, then its own:
--   claim   sha256, batch id, pending ttl_ms: take the key for this request unless it is taken.
--           Returns {'claimed'}, {'reused'} (taken by another request), {'pending', batch id}
--           or {'done', batch id}.
--   refresh batch id, pending ttl_ms: extend our pending record. Returns 1, or 0 if not ours.
--   finish  batch id, ttl_s: our batch is committed: the record is `done`. Returns 1 or 0.
--   release batch id: our request failed: drop our pending record. Returns 1 or 0.
local step = ARGV[1]
local raw = redis.call('GET', KEYS[1])
local record = nil
if raw then
  local ok, decoded = pcall(cjson.decode, raw)
  if ok and type(decoded) == 'table' then
    record = decoded
  else
    record = {state = 'done', batch_id = raw}
  end
end

if step == 'claim' then
  if not record then
    local value = cjson.encode({state = 'pending', sha256 = ARGV[2], batch_id = ARGV[3]})
    redis.call('SET', KEYS[1], value, 'PX', ARGV[4])
    return {'claimed'}
  end
  if record.sha256 and record.sha256 ~= ARGV[2] then
    return {'reused'}
  end
  return {record.state, record.batch_id}
end

local ours = record ~= nil and record.batch_id == ARGV[2]
if step == 'refresh' then
  if ours and record.state == 'pending' then
    redis.call('PEXPIRE', KEYS[1], ARGV[3])
    return 1
  end
  return 0
elseif step == 'finish' then
  if ours then
    record.state = 'done'
    redis.call('SET', KEYS[1], cjson.encode(record), 'EX', ARGV[3])
    return 1
  end
  return 0
elseif step == 'release' then
  if ours and record.state == 'pending' then
    redis.call('DEL', KEYS[1])
    return 1
  end
  return 0
end
return redis.error_reply('idempotency.lua: unknown step ' .. tostring(step))
