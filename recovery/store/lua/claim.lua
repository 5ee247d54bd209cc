-- Claim documents for one recovery run, each with a lease.
-- KEYS: due failed claimed waiting dead corrupt imports
-- ARGV: now lease retention mode delays jitter token
-- Then one record key per candidate (item_key(i)) and the candidate ids (item_arg(i)).
-- token: this claim's own, kept in each record it takes (`claim`): only a settle or a
-- give-back with the same token changes a claimed document, so a run that outlived
-- its lease cannot settle or release a claim another run has since taken.
-- lease: seconds the claim holds; retention: documents first failed longer ago than
-- this many seconds are left to cleanup; delays and jitter: the run's backoff per
-- retry level and its jitter, as select_due.lua reads them. mode:
--   'due'     a candidate is taken only if it is still eligible now under the run's
--             settings, so concurrent runs that read the same candidates never both
--             claim one;
--   'preview' the same decisions as 'due', written nowhere (a dry run);
--   'manual'  an operator's retry: any tracked document not already claimed, sent or
--             recovering is taken, dead ones included. A dead one keeps its score in
--             dead (dscore) and its reason (dead): a retry that brings no verdict puts
--             it back there (requeue), never in due.
-- A record that cannot be read (not a hash; a missing, malformed or non-strict number
-- such as attempts '02', which Python's int() takes and HINCRBY refuses; an unknown
-- state) is moved out of every other index to the corrupt one, visible and removable,
-- instead of being sent and failing the run's settle.
-- A record already under this claim's token is answered as taken, as it is: the same
-- claim applied again, its reply lost (redis-py sends a call again when the connection
-- drops before the reply). Else the second call would find it taken and answer none,
-- and nobody would send it until the lease ran out.
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

-- The record, read once: {field = value} and the flat HGETALL reply, or nil when it
-- cannot be read (missing, not a hash, or a field malformed).
local function read(rec)
  local flat = redis.pcall('HGETALL', rec)
  if flat.err then return nil end
  local f = {}
  for j = 1, #flat, 2 do f[flat[j]] = flat[j + 1] end
  if not (whole(f.retries) and whole(f.failures) and decimal(f.first) and decimal(f.last)
      and f.body and STATES[f.state] and f.task_id and f.cat) then
    return nil
  end
  for name, kind in pairs(OPTIONAL) do
    local raw = f[name]
    if raw and raw ~= '' and kind(raw) == nil then return nil end
  end
  return f, flat
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

-- A record as it is stored: {id, field, value, ...}.
local function as_stored(id, flat)
  local item = {id}
  for j = 1, #flat do item[j + 1] = flat[j] end
  return item
end

-- Claim one readable record; its reply is the record as it is after the claim: what
-- was read, with the fields the claim set (no second read). dead: the reason of a
-- dead record, else nil.
local function take(id, rec, score, flat, dead)
  local item = {id}
  if write then
    local set = {state = 'claimed', rec_at = num(now), dscore = num(score), claim = A.token,
      dead = dead}
    redis.call('ZREM', K.due, id)
    redis.call('ZREM', K.waiting, id)
    redis.call('ZREM', K.dead, id)
    redis.call('ZADD', K.claimed, num(lease), id)
    redis.call('HSET', rec, 'state', set.state, 'rec_at', set.rec_at, 'dscore', set.dscore,
      'claim', set.claim)
    if dead then redis.call('HSET', rec, 'dead', dead) end
    redis.call('HDEL', rec, 'reason')
    for j = 1, #flat, 2 do
      local name = flat[j]
      if name ~= 'reason' then
        item[#item + 1] = name
        item[#item + 1] = set[name] or flat[j + 1]
        set[name] = nil
      end
    end
    for _, name in ipairs({'state', 'rec_at', 'dscore', 'claim', 'dead'}) do
      if set[name] then
        item[#item + 1] = name
        item[#item + 1] = set[name]
      end
    end
  else
    item = as_stored(id, flat)
  end
  claimed[#claimed + 1] = item
end

for i = 1, item_args do
  local id, rec = item_arg(i), item_key(i)
  local score = tonumber(redis.call('ZSCORE', K.due, id))
  if A.mode == 'manual' then
    if redis.call('EXISTS', rec) == 1 then
      local f, flat = read(rec)
      if not f then
        quarantine(id)
      elseif f.state == 'dead' then
        take(id, rec, tonumber(redis.call('ZSCORE', K.dead, id)) or tonumber(f.last), flat,
          f.reason or '')
      elseif f.state == 'claimed' then
        if f.claim == A.token then claimed[#claimed + 1] = as_stored(id, flat) end
      elseif f.state ~= 'sent' and f.state ~= 'recovering' then
        take(id, rec, score or due_score(rec), flat)
      end
    end
  elseif score then
    if eligible(delays, tonumber(A.jitter), id, score, now) then
      local f, flat = read(rec)
      if not f then
        quarantine(id)
      elseif tonumber(f.first) >= cutoff then
        take(id, rec, score, flat)
      end
    end
  elseif write and redis.pcall('HGET', rec, 'claim') == A.token then
    -- out of due and under this claim (pcall: a record it moved to corrupt may be no
    -- hash): taken by it already
    local f, flat = read(rec)
    if f and f.state == 'claimed' then claimed[#claimed + 1] = as_stored(id, flat) end
  end
end
return {claimed, corrupt}
