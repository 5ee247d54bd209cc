-- A tracked task succeeded: count the run and stop tracking the document.
-- KEYS[1] record hash  KEYS[2] due  KEYS[3] failed  KEYS[4] claimed  KEYS[5] dead
-- KEYS[6] stats  KEYS[7] by-category  KEYS[8] by-worker  KEYS[9] by-query
-- KEYS[10] worker-processed  KEYS[11] query-processed  KEYS[12] waiting  KEYS[13] imports
-- KEYS[14] inflight  KEYS[15] inflight-tasks  KEYS[16] breakers
-- ARGV[1] now  ARGV[2] doc id  ARGV[3] worker  ARGV[4] query  ARGV[5] recovery attempt (0/1)
-- ARGV[6] id of the task run that succeeded  ARGV[7] circuit-breaker window
-- Returns {was tracked (0/1), recovery seconds or ''}.
local rec, id, now = KEYS[1], ARGV[2], tonumber(ARGV[1])
agg_incr(KEYS[10], ARGV[3])
agg_incr(KEYS[11], ARGV[4])
redis.call('ZREM', KEYS[14], ARGV[6])
redis.call('HDEL', KEYS[15], ARGV[6])
if redis.call('EXISTS', rec) == 0 then
  return {0, ''}
end
local started, category = nil, nil
if is_hash(rec) then
  local f = redis.call('HMGET', rec, 'rec_at', 'cat')
  started, category = tonumber(f[1]), f[2]
end
untrack({KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[12], KEYS[13]}, {KEYS[7], KEYS[8], KEYS[9]},
  rec, id)
redis.call('HINCRBY', KEYS[6], 'resolved', 1)
if ARGV[5] == '1' then
  redis.call('HINCRBY', KEYS[6], 'successful_recoveries', 1)
  breaker_note(KEYS[16], category, '1', tonumber(ARGV[7]))
  if started then
    local took = math.max(0, now - started)
    redis.call('HINCRBYFLOAT', KEYS[6], 'recovery_time_total', took)
    redis.call('HINCRBY', KEYS[6], 'recovery_time_count', 1)
    return {1, tostring(took)}
  end
end
return {1, ''}
