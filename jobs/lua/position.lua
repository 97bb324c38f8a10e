-- Where a queued job stands: how many jobs of its model will start before it, and the model's
-- recent service rate. ARGV: job id, now, scheduling ('fair' | 'fifo').
-- Returns {position, claims, span_s} (claims in the last span_s seconds), or {} when the job is
-- not queued. With 'fair' the position is an estimate from the state now: every job of the
-- lanes served before the job's own, the job's own tenant's jobs ahead of it, and of each other
-- tenant of its lane the jobs whose virtual time comes first (as claim_next.lua orders them);
-- work that arrives later in an earlier lane may still go first.
local id, now, scheduling = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local status, model, lane, priority, tenant, cost = unpack(redis.call('HMGET', job_key(id),
  'status', 'model', 'lane', 'priority', 'tenant', 'cost'))
if status ~= 'queued' or not model then return {} end
-- Tenants of one lane looked at, at most (the estimate stays cheap with many tenants).
local MAX_TENANTS = 500

local function rate()
  local since = math.floor(now / 10) - 6
  local claims = 0
  local counts = redis.call('HGETALL', claims_key(model))
  for i = 1, #counts, 2 do
    if tonumber(counts[i]) >= since then claims = claims + tonumber(counts[i + 1]) end
  end
  return claims, now - since * 10
end

local function weight(t) return tonumber(redis.call('HGET', P .. ':tenant_weights', t)) or 1 end

local function lane_total(lkey)
  local n = 0
  for _, t in ipairs(redis.call('ZRANGE', lkey, 0, MAX_TENANTS - 1)) do
    n = n + redis.call('ZCARD', lkey .. ':' .. t)
  end
  return n
end

local position
local suspect_rank = redis.call('ZRANK', suspects_key(model), id)
if suspect_rank then
  position = suspect_rank
elseif scheduling == 'fifo' or not lane then
  position = redis.call('ZCARD', suspects_key(model)) + (redis.call('ZRANK', pending_key(model), id) or 0)
else
  position = redis.call('ZCARD', suspects_key(model))
  local own = lane .. ':' .. priority
  for _, lp in ipairs(LANES) do
    local lkey = P .. ':lane:' .. model .. ':' .. lp
    if lp ~= own then
      position = position + lane_total(lkey)
    else
      local rank = redis.call('ZRANK', lkey .. ':' .. tenant, id) or 0
      local vself = tonumber(redis.call('ZSCORE', lkey, tenant)) or 0
      -- The virtual time at which this job is the lane's next.
      local vjob = vself + rank * (tonumber(cost) or 1) / weight(tenant)
      position = position + rank
      local others = redis.call('ZRANGE', lkey, 0, MAX_TENANTS - 1, 'WITHSCORES')
      for i = 1, #others, 2 do
        local t, vt = others[i], tonumber(others[i + 1])
        -- t's k-th job (from 0, each costing as t's next one) comes first if vt + k * step is
        -- below vjob, or equal to it for a tenant sorting before this one (ZSET order on ties).
        if t ~= tenant and (vt < vjob or (vt == vjob and t < tenant)) then
          local line = lkey .. ':' .. t
          local head = redis.call('ZRANGE', line, 0, 0)[1]
          local step = (tonumber(head and redis.call('HGET', job_key(head), 'cost')) or 1) / weight(t)
          local n
          if t < tenant then n = math.floor((vjob - vt) / step) + 1 else n = math.ceil((vjob - vt) / step) end
          position = position + math.min(n, redis.call('ZCARD', line))
        end
      end
      break
    end
  end
end
local claims, span = rate()
return {position, claims, tostring(span)}
