-- Stop tracking documents: retention cleanup, dead-set trimming, manual delete.
-- KEYS: due failed claimed waiting dead corrupt imports by_category by_worker by_query stats deleted
-- ARGV: now which cutoff counter ttl
-- Then one record key per id (item_key(i)) and the ids (item_arg(i)).
-- which: 'failed' removes an id only if it first failed at or before cutoff (every
-- tracked document, live or dead, is in that index); 'any' removes it whatever it is.
-- counter: the stats counter the removals are added to; ttl: the seconds a record
-- lives after its last failure (its safety-net TTL).
-- Returns {documents removed, records gone by their TTL, index entries that had no
-- record}. A record can only have expired if it first failed more than `ttl` ago
-- (the TTL runs from its last failure); an entry without a record that is younger, or
-- in no failed index at all, never had one here (written by hand, or its record was
-- deleted outside docrecovery). Both may leave counts in the aggregates behind.
-- A document removed while its resubmission is sent or running has that task id
-- marked deleted: the run's outcomes are then dropped (record_failure.lua, resolve.lua)
-- instead of tracking the document again.
-- A counter that is not a number refuses the call before anything changes
-- (stats_refusal).
local refused = stats_refusal(K.stats, {A.counter})
if refused then return refused end
local cutoff = tonumber(A.cutoff)
local now = clock(A.now)
local expired_before = now - tonumber(A.ttl)
local idx = {K.due, K.failed, K.claimed, K.waiting, K.dead, K.corrupt, K.imports}
local agg = {K.by_category, K.by_worker, K.by_query}
local removed, expired, strays = 0, 0, 0
for i = 1, item_args do
  local id, rec = item_arg(i), item_key(i)
  local ok
  if A.which == 'any' then
    -- only what is tracked counts as removed (an unknown id is not a deletion)
    ok = redis.call('EXISTS', rec) == 1
    for _, key in ipairs(idx) do
      ok = ok or redis.call('ZSCORE', key, id) ~= false
    end
  else
    local score = tonumber(redis.call('ZSCORE', K.failed, id))
    ok = score ~= nil and score <= cutoff
  end
  if ok then
    if redis.call('EXISTS', rec) == 0 then
      local first = tonumber(redis.call('ZSCORE', K.failed, id))
      if first and first <= expired_before then
        expired = expired + 1
      else
        strays = strays + 1
      end
    end
    if is_hash(rec) then
      local f = redis.call('HMGET', rec, 'state', 'task_id')
      if (f[1] == 'sent' or f[1] == 'recovering') and f[2] and f[2] ~= '' then
        redis.call('ZADD', K.deleted, num(now), f[2])
      end
    end
    untrack(idx, agg, rec, id)
    removed = removed + 1
  end
end
if removed > 0 then redis.call('HINCRBY', K.stats, A.counter, removed) end
return {removed, expired, strays}
