-- Claim due documents for one recovery run, each with a lease.
-- KEYS[1] due  KEYS[2] claimed  KEYS[3] dead  KEYS[4] stats  KEYS[5] waiting
-- KEYS[6] failed, then one record hash per candidate.
-- ARGV[1] now  ARGV[2] lease expiry  ARGV[3] max retries  ARGV[4] retention cutoff
-- (documents first failed before it are left to cleanup)  ARGV[5] mode: 'due' or
-- 'manual'  ARGV[6..] candidate ids (KEYS[i + 1] belongs to ARGV[i]).
-- 'due': a candidate is taken only if it is still due now, so concurrent runs that
-- read the same candidates never both claim one. 'manual' (an operator's retry): any
-- tracked document not already claimed or recovering is taken, dead ones included.
-- Returns {claimed, corrupt, exhausted}: claimed is a list of {id, field, value, ...}
-- (every field but the error message);
-- corrupt and exhausted are lists of ids.
local now, lease = tonumber(ARGV[1]), ARGV[2]
local max_retries, cutoff = tonumber(ARGV[3]), tonumber(ARGV[4])
local claimed, corrupt, exhausted = {}, {}, {}

local function take(id, rec)
  if redis.call('ZREM', KEYS[3], id) == 1 then
    redis.call('ZADD', KEYS[6], tonumber(redis.call('HGET', rec, 'first')) or now, id)
  end
  redis.call('ZREM', KEYS[1], id)
  redis.call('ZREM', KEYS[5], id)
  redis.call('ZADD', KEYS[2], lease, id)
  redis.call('HSET', rec, 'state', 'claimed', 'rec_at', now)
  redis.call('HDEL', rec, 'reason')
  -- everything but the error message, which a resubmission does not need
  local item = {id}
  local all = redis.call('HGETALL', rec)
  for j = 1, #all, 2 do
    if all[j] ~= 'msg' then
      item[#item + 1] = all[j]
      item[#item + 1] = all[j + 1]
    end
  end
  claimed[#claimed + 1] = item
end

if ARGV[5] == 'manual' then
  for i = 6, #ARGV do
    local id, rec = ARGV[i], KEYS[i + 1]
    if is_hash(rec) then
      local state = redis.call('HGET', rec, 'state')
      if state ~= 'claimed' and state ~= 'recovering' then take(id, rec) end
    elseif redis.call('EXISTS', rec) == 1 then
      corrupt[#corrupt + 1] = id
    end
  end
  return {claimed, corrupt, exhausted}
end

for i = 6, #ARGV do
  local id, rec = ARGV[i], KEYS[i + 1]
  local score = tonumber(redis.call('ZSCORE', KEYS[1], id))
  if score and score <= now then
    if not is_hash(rec) then
      redis.call('ZREM', KEYS[1], id)
      if redis.call('EXISTS', rec) == 1 then corrupt[#corrupt + 1] = id end
    else
      local f = redis.call('HMGET', rec, 'retries', 'first')
      local first = tonumber(f[2])
      if first == nil then
        redis.call('ZREM', KEYS[1], id)
        corrupt[#corrupt + 1] = id
      elseif first >= cutoff then
        if (tonumber(f[1]) or 0) >= max_retries then
          redis.call('ZREM', KEYS[1], id)
          redis.call('ZREM', KEYS[5], id)
          redis.call('ZREM', KEYS[6], id)
          redis.call('ZADD', KEYS[3], now, id)
          redis.call('HSET', rec, 'state', 'dead', 'reason', 'retries exhausted')
          redis.call('HDEL', rec, 'next')
          redis.call('HINCRBY', KEYS[4], 'dead_total', 1)
          exhausted[#exhausted + 1] = id
        else
          take(id, rec)
        end
      end
    end
  end
end
return {claimed, corrupt, exhausted}
