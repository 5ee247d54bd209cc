-- Stop tracking documents: retention cleanup, dead-set trimming, manual delete.
-- KEYS[1] due  KEYS[2] failed  KEYS[3] claimed  KEYS[4] dead  KEYS[5] by-category
-- KEYS[6] by-worker  KEYS[7] by-query  KEYS[8] stats  KEYS[9] waiting  KEYS[10] imports,
-- then one record hash per id (KEYS[10 + i] belongs to ARGV[3 + i]).
-- ARGV[1] index to check: 'failed', 'dead' or 'any'  ARGV[2] cutoff: an id is removed
-- only if its score in that index is at most this (ignored for 'any')
-- ARGV[3] stats counter to add the removals to  ARGV[4..] ids.
-- Returns {documents removed, how many of them had no record left} — a record gone
-- without this script (its TTL fired) left counts in the aggregates behind.
local which, cutoff, counter = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local index = ({failed = KEYS[2], dead = KEYS[4]})[which]
local idx = {KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[9], KEYS[10]}
local agg = {KEYS[5], KEYS[6], KEYS[7]}
local removed, orphans = 0, 0
for i = 4, #ARGV do
  local id, rec = ARGV[i], KEYS[i + 7]
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
if removed > 0 then redis.call('HINCRBY', KEYS[8], counter, removed) end
return {removed, orphans}
