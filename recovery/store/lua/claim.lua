-- Claim due documents for one recovery run, each with a lease.
-- KEYS: due claimed dead stats waiting failed
-- ARGV: now lease max_retries cutoff mode
-- Then one record key per candidate (item_key(i)) and the candidate ids (item_arg(i)).
-- lease: expiry of the claim; cutoff: documents first failed before it are left to
-- cleanup (retention). mode:
--   'due'     a candidate is taken only if it is still due now, so concurrent runs
--             that read the same candidates never both claim one;
--   'preview' the same decisions as 'due', written nowhere (a dry run);
--   'manual'  an operator's retry: any tracked document not already claimed or
--             recovering is taken, dead ones included.
-- Returns {claimed, corrupt, exhausted}: claimed is a list of {id, field, value, ...}
-- (every field but the error message); corrupt and exhausted are lists of ids.
local now, lease = tonumber(A.now), A.lease
local max_retries, cutoff = tonumber(A.max_retries), tonumber(A.cutoff)
local write = A.mode ~= 'preview'
local claimed, corrupt, exhausted = {}, {}, {}

local function take(id, rec)
  if write then
    if redis.call('ZREM', K.dead, id) == 1 then
      redis.call('ZADD', K.failed, tonumber(redis.call('HGET', rec, 'first')) or now, id)
    end
    redis.call('ZREM', K.due, id)
    redis.call('ZREM', K.waiting, id)
    redis.call('ZADD', K.claimed, lease, id)
    redis.call('HSET', rec, 'state', 'claimed', 'rec_at', now)
    redis.call('HDEL', rec, 'reason')
  end
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

if A.mode == 'manual' then
  for i = 1, item_args do
    local id, rec = item_arg(i), item_key(i)
    if is_hash(rec) then
      local state = redis.call('HGET', rec, 'state')
      if state ~= 'claimed' and state ~= 'recovering' then take(id, rec) end
    elseif redis.call('EXISTS', rec) == 1 then
      corrupt[#corrupt + 1] = id
    end
  end
  return {claimed, corrupt, exhausted}
end

for i = 1, item_args do
  local id, rec = item_arg(i), item_key(i)
  local score = tonumber(redis.call('ZSCORE', K.due, id))
  if score and score <= now then
    if not is_hash(rec) then
      if write then redis.call('ZREM', K.due, id) end
      if redis.call('EXISTS', rec) == 1 then corrupt[#corrupt + 1] = id end
    else
      local f = redis.call('HMGET', rec, 'retries', 'first')
      local first = tonumber(f[2])
      if first == nil then
        if write then redis.call('ZREM', K.due, id) end
        corrupt[#corrupt + 1] = id
      elseif first >= cutoff then
        if (tonumber(f[1]) or 0) >= max_retries then
          if write then bury(K, id, rec, now, 'retries exhausted') end
          exhausted[#exhausted + 1] = id
        else
          take(id, rec)
        end
      end
    end
  end
end
return {claimed, corrupt, exhausted}
