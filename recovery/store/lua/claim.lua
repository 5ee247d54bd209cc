-- Claim documents for one recovery run, each with a lease.
-- KEYS: due failed claimed waiting dead corrupt imports
-- ARGV: now lease retention mode delays jitter
-- Then one record key per candidate (item_key(i)) and the candidate ids (item_arg(i)).
-- lease: seconds the claim holds; retention: documents first failed longer ago than
-- this many seconds are left to cleanup; delays and jitter: the run's backoff per
-- retry level and its jitter, as select_due.lua reads them. mode:
--   'due'     a candidate is taken only if it is still eligible now under the run's
--             settings, so concurrent runs that read the same candidates never both
--             claim one;
--   'preview' the same decisions as 'due', written nowhere (a dry run);
--   'manual'  an operator's retry: any tracked document not already claimed, sent or
--             recovering is taken, dead ones included.
-- A record that cannot be read (not a hash; a missing, malformed or non-strict number
-- such as attempts '02', which Python's int() takes and HINCRBY refuses; an unknown
-- state) is moved out of every other index to the corrupt one, visible and removable,
-- instead of being sent and failing the run's settle.
-- Returns {claimed, corrupt}: claimed is a list of {id, field, value, ...}; corrupt
-- a list of ids.
local now = clock(A.now)
local lease, cutoff = now + tonumber(A.lease), now - tonumber(A.retention)
local write = A.mode ~= 'preview'
local delays = cjson.decode(A.delays)
local claimed, corrupt = {}, {}

local STATES = {failed = true, claimed = true, sent = true, recovering = true, waiting = true,
  dead = true}
-- optional fields: absent or empty, else strictly of their kind
local OPTIONAL = {attempts = whole, lane = whole, rec_at = decimal, tlimit = decimal,
  jit = decimal, dscore = decimal}

local function readable(rec)
  if not is_hash(rec) then return false end
  local f = redis.call('HMGET', rec, 'retries', 'failures', 'first', 'last', 'body', 'state',
    'task_id', 'cat')
  if not (whole(f[1]) and whole(f[2]) and decimal(f[3]) and decimal(f[4]) and f[5]
      and STATES[f[6]] and f[7] and f[8]) then
    return false
  end
  for name, kind in pairs(OPTIONAL) do
    local raw = redis.call('HGET', rec, name)
    if raw and raw ~= '' and kind(raw) == nil then return false end
  end
  return true
end

-- out of every run's way and counted once: in corrupt, in no other index
local function quarantine(id)
  corrupt[#corrupt + 1] = id
  if write then
    for _, key in ipairs({K.due, K.failed, K.claimed, K.waiting, K.dead, K.imports}) do
      redis.call('ZREM', key, id)
    end
    redis.call('ZADD', K.corrupt, num(now), id)
  end
end

local function take(id, rec, score)
  if write then
    redis.call('ZREM', K.due, id)
    redis.call('ZREM', K.waiting, id)
    redis.call('ZREM', K.dead, id)
    redis.call('ZADD', K.claimed, num(lease), id)
    redis.call('HSET', rec, 'state', 'claimed', 'rec_at', num(now), 'dscore', num(score))
    redis.call('HDEL', rec, 'reason')
  end
  local item = {id}
  local all = redis.call('HGETALL', rec)
  for j = 1, #all do item[j + 1] = all[j] end
  claimed[#claimed + 1] = item
end

for i = 1, item_args do
  local id, rec = item_arg(i), item_key(i)
  local score = tonumber(redis.call('ZSCORE', K.due, id))
  if A.mode == 'manual' then
    if redis.call('EXISTS', rec) == 1 then
      if not readable(rec) then
        quarantine(id)
      else
        local state = redis.call('HGET', rec, 'state')
        if state ~= 'claimed' and state ~= 'sent' and state ~= 'recovering' then
          take(id, rec, score or due_score(rec))
        end
      end
    end
  elseif score then
    if eligible(delays, tonumber(A.jitter), id, score, now) then
      if not readable(rec) then
        quarantine(id)
      elseif tonumber(redis.call('HGET', rec, 'first')) >= cutoff then
        take(id, rec, score)
      end
    end
  end
end
return {claimed, corrupt}
