-- Stop tracking documents: retention cleanup, dead-set trimming, manual delete.
-- KEYS: due failed claimed dead by_category by_worker by_query stats waiting imports
-- ARGV: which cutoff counter
-- Then one record key per id (item_key(i)) and the ids (item_arg(i)).
-- which: the index to check, 'failed', 'dead' or 'any'; cutoff: an id is removed only
-- if its score in that index is at most this (ignored for 'any'); counter: the stats
-- counter the removals are added to.
-- Returns {documents removed, how many of them had no record left} — a record gone
-- without this script (its TTL fired) left counts in the aggregates behind.
local which, cutoff = A.which, tonumber(A.cutoff)
local index = ({failed = K.failed, dead = K.dead})[which]
local idx = {K.due, K.failed, K.claimed, K.dead, K.waiting, K.imports}
local agg = {K.by_category, K.by_worker, K.by_query}
local removed, orphans = 0, 0
for i = 1, item_args do
  local id, rec = item_arg(i), item_key(i)
  local ok
  if which == 'any' then
    -- only what is tracked counts as removed (an unknown id is not a deletion)
    ok = redis.call('EXISTS', rec) == 1
    for _, key in ipairs(idx) do
      ok = ok or redis.call('ZSCORE', key, id) ~= false
    end
  else
    local score = tonumber(redis.call('ZSCORE', index, id))
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
