-- A snapshot of every model's line and workers, for GET /metrics (one round trip).
-- ARGV: now, then the model aliases. Returns JSON: {model: {queued, suspects, oldest_created_at,
-- lanes: {"interactive:normal": n, ...}, workers: [heartbeat json, ...]}}.
-- Tenants of one lane counted, at most (a scrape stays cheap with many tenants).
local MAX_TENANTS = 500
local now = tonumber(ARGV[1])
local state = {}
for i = 2, #ARGV do
  local model = ARGV[i]
  local oldest = redis.call('ZRANGE', pending_key(model), 0, 0)[1]
  local lanes = {}
  for _, lp in ipairs(LANES) do
    local lkey = P .. ':lane:' .. model .. ':' .. lp
    local n = 0
    for _, t in ipairs(redis.call('ZRANGE', lkey, 0, MAX_TENANTS - 1)) do
      n = n + redis.call('ZCARD', lkey .. ':' .. t)
    end
    lanes[lp] = n
  end
  local workers = {}
  for _, name in ipairs(redis.call('ZRANGEBYSCORE', P .. ':workers:' .. model, now, '+inf')) do
    local beat = redis.call('GET', P .. ':worker:' .. name)
    if beat then workers[#workers + 1] = {name = name, heartbeat = beat} end
  end
  state[model] = {
    queued = redis.call('ZCARD', pending_key(model)),
    suspects = redis.call('ZCARD', suspects_key(model)),
    oldest_created_at = oldest and tonumber(redis.call('HGET', job_key(oldest), 'created_at')) or false,
    lanes = lanes,
    workers = workers,
  }
end
return cjson.encode(state)
