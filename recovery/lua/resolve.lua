-- A tracked task succeeded: count the run and stop tracking the document.
-- KEYS[1] record hash  KEYS[2] due  KEYS[3] failed  KEYS[4] claimed  KEYS[5] dead
-- KEYS[6] stats  KEYS[7] by-category  KEYS[8] by-worker  KEYS[9] by-query
-- KEYS[10] worker-processed  KEYS[11] query-processed
-- ARGV[1] now  ARGV[2] doc id  ARGV[3] worker  ARGV[4] query  ARGV[5] recovery attempt (0/1)
-- Returns {was tracked (0/1), recovery seconds or ''}.
local rec, id, now = KEYS[1], ARGV[2], tonumber(ARGV[1])
agg_incr(KEYS[10], ARGV[3])
agg_incr(KEYS[11], ARGV[4])
if redis.call('EXISTS', rec) == 0 then
  return {0, ''}
end
local started = is_hash(rec) and tonumber(redis.call('HGET', rec, 'rec_at')) or nil
untrack({KEYS[2], KEYS[3], KEYS[4], KEYS[5]}, {KEYS[7], KEYS[8], KEYS[9]}, rec, id)
redis.call('HINCRBY', KEYS[6], 'resolved', 1)
if ARGV[5] == '1' then
  redis.call('HINCRBY', KEYS[6], 'successful_recoveries', 1)
  if started then
    local took = math.max(0, now - started)
    redis.call('HINCRBYFLOAT', KEYS[6], 'recovery_time_total', took)
    redis.call('HINCRBY', KEYS[6], 'recovery_time_count', 1)
    return {1, tostring(took)}
  end
end
return {1, ''}
