-- A worker holding a ticket (a Celery message of the model's queue) claims the next job in line.
-- ARGV: model, now, ttl, max_attempts, worker name, lease_s, may_run_suspect ('1' when the worker
-- runs nothing else now), scheduling ('fair' | 'fifo').
-- Which job: a suspect first (alone, see below); then, with 'fair', the first lane (LANES, in
-- _lib.lua) with work, and in it the tenant with the lowest virtual time, whose time then grows
-- by the job's cost (prompt + max_tokens) over its weight; 'fifo' takes the model's oldest job.
-- Returns {'claimed', attempt, suspect ('1'|'0'), the job hash as field, value, ...}
--       | {'drain'}  suspects wait: run nothing new until this worker is empty, then ask again
--       | {'empty'}  nothing waits (the ticket was spare)
local model, now, ttl, max_attempts, worker, lease_s = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4]), ARGV[5], tonumber(ARGV[6])
local suspects, pending = suspects_key(model), pending_key(model)
local drainer = P .. ':drainer:' .. model

-- The next job of a lane (interactive first, then by priority; tenants by weight), taken out of
-- every line it is in; nil when none waits.
local function pop_fair()
  for _, lp in ipairs(LANES) do
    local lkey = P .. ':lane:' .. model .. ':' .. lp
    while true do
      local head = redis.call('ZRANGE', lkey, 0, 0, 'WITHSCORES')
      if #head == 0 then break end
      local tenant, vtime = head[1], tonumber(head[2])
      local line = lkey .. ':' .. tenant
      local popped = redis.call('ZPOPMIN', line)
      if #popped > 0 and redis.call('ZCARD', line) > 0 then
        local cost = tonumber(redis.call('HGET', job_key(popped[1]), 'cost')) or 1
        local weight = tonumber(redis.call('HGET', P .. ':tenant_weights', tenant)) or 1
        redis.call('ZADD', lkey, vtime + cost / weight, tenant)
      else
        redis.call('ZREM', lkey, tenant)
      end
      if #popped > 0 then
        redis.call('ZREM', pending, popped[1])
        return popped[1]
      end
    end
  end
  return nil
end

-- The model's oldest job, taken out of its lane too; nil when none waits.
local function pop_fifo()
  local popped = redis.call('ZPOPMIN', pending)
  if #popped == 0 then return nil end
  local tenant, lane, priority = unpack(redis.call('HMGET', job_key(popped[1]), 'tenant', 'lane', 'priority'))
  if lane then
    local lkey = lane_key(model, lane, priority)
    redis.call('ZREM', lkey .. ':' .. tenant, popped[1])
    if redis.call('ZCARD', lkey .. ':' .. tenant) == 0 then redis.call('ZREM', lkey, tenant) end
  end
  return popped[1]
end
-- The service rate, for estimated starts (position.lua): claims per 10-second window, the
-- last CLAIM_WINDOWS kept.
local function count_claim(m, t)
  local window = math.floor(t / 10)
  local key = claims_key(m)
  if redis.call('HINCRBY', key, window, 1) == 1 then  -- a new window: drop the old ones
    for _, w in ipairs(redis.call('HKEYS', key)) do
      if tonumber(w) <= window - CLAIM_WINDOWS then redis.call('HDEL', key, w) end
    end
  end
end

-- Bounded: entries of jobs cancelled, expired or gone are dropped as they are met.
for _ = 1, 200 do
  local id, suspect = nil, '0'
  if redis.call('ZCARD', suspects) > 0 then
    if ARGV[7] == '1' then
      id, suspect = redis.call('ZPOPMIN', suspects)[1], '1'
    else
      local holder = redis.call('GET', drainer)
      if not holder then
        redis.call('SET', drainer, worker, 'EX', lease_s)
        return {'drain'}
      end
      if holder == worker then return {'drain'} end
    end
  end
  if not id then
    if ARGV[8] == 'fifo' then id = pop_fifo() else id = pop_fair() end
  end
  if not id then return {'empty'} end
  local K, chan, bchan = keys_of(id)
  local status, cancel, expires_at = unpack(redis.call('HMGET', K[1], 'status', 'cancel', 'expires_at'))
  if status == 'queued' then
    if cancel == '1' then
      finish_job(K, 'cancelled', EMPTY_CANCELLED, now, ttl, chan, bchan)
    elseif expires_at and expires_at ~= '' and tonumber(expires_at) < tonumber(now) then
      finish_job(K, 'expired', EMPTY_EXPIRED, now, ttl, chan, bchan)
    else
      local attempt = redis.call('HINCRBY', K[1], 'attempt', 1)
      if attempt > max_attempts then
        finish_job(K, 'failed', attempts_exceeded(max_attempts), now, ttl, chan, bchan)
      else
        if attempt > 1 then
          append(K[1], K[2], chan, 'reset', '{"attempt":' .. attempt .. '}')
        end
        redis.call('HSET', K[1], 'status', 'running', 'started_at', now, 'worker', worker, 'completion_tokens', 0)
        redis.call('ZADD', LEASES, tonumber(now) + lease_s, id)
        redis.call('ZREM', DEADLINES, id)  -- started in time
        count_claim(model, tonumber(now))
        append(K[1], K[2], chan, 'status', '{"status":"running","at":' .. now .. ',"attempt":' .. attempt .. '}')
        if suspect == '1' and redis.call('GET', drainer) == worker then redis.call('DEL', drainer) end
        local reply = {'claimed', attempt, suspect}
        for _, v in ipairs(redis.call('HGETALL', K[1])) do reply[#reply + 1] = v end
        return reply
      end
    end
  end
  -- anything else (gone, final, running under a lease) is not this ticket's to run
end
return {'empty'}
