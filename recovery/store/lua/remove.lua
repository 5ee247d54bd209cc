-- Stop tracking documents: retention cleanup, dead-set trimming, manual delete.
-- KEYS: due failed claimed waiting dead corrupt imports by_category by_worker by_query stats
-- ARGV: which cutoff counter
-- Then one record key per id (item_key(i)) and the ids (item_arg(i)).
-- which: 'failed' removes an id only if it first failed at or before cutoff (every
-- tracked document, live or dead, is in that index); 'any' removes it whatever it is.
-- counter: the stats counter the removals are added to.
-- Returns {documents removed, how many of them had no record left} — a record gone
-- without this script (its TTL fired) left counts in the aggregates behind.
local cutoff = tonumber(A.cutoff)
local idx = {K.due, K.failed, K.claimed, K.waiting, K.dead, K.corrupt, K.imports}
local agg = {K.by_category, K.by_worker, K.by_query}
local removed, orphans = 0, 0
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
    if redis.call('EXISTS', rec) == 0 then orphans = orphans + 1 end
    untrack(idx, agg, rec, id)
    removed = removed + 1
  end
end
if removed > 0 then redis.call('HINCRBY', K.stats, A.counter, removed) end
return {removed, orphans}
