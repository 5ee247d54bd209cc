-- Record one failure of a document: the record, its indexes and the aggregates.
-- KEYS[1]  record hash          KEYS[2] due zset       KEYS[3] failed zset
-- KEYS[4]  claimed zset         KEYS[5] dead zset      KEYS[6] stats hash
-- KEYS[7]  by-category hash     KEYS[8] by-worker hash KEYS[9] by-query hash
-- KEYS[10] worker-failures      KEYS[11] worker-processed
-- KEYS[12] query-failures       KEYS[13] query-processed
-- KEYS[14] waiting zset         KEYS[15] imports zset  KEYS[16] inflight zset
-- KEYS[17] inflight-tasks hash  KEYS[18] env generations hash  KEYS[19] breakers hash
-- ARGV[1] now  ARGV[2] doc id  ARGV[3] permanent (0/1)  ARGV[4] counted (0/1: this
-- failure counts as a retry when the document is already tracked)
-- ARGV[5] recovery attempt (0/1)  ARGV[6] max retries  ARGV[7] record TTL seconds
-- ARGV[8] JSON list of backoff delays, indexed by retry count
-- ARGV[9] id of the task run that failed (its in-flight entry is cleared)
-- ARGV[10] '' for a reported failure; for a lost run found in the in-flight index,
-- 'any' (a redelivery found its own entry) or the deadline bound a sweep read with:
-- skipped unless the entry is still there (and, for a sweep, still past that bound),
-- so another sweep, a redelivery that checked in again, or a late report wins
-- ARGV[11] circuit-breaker window  ARGV[12..] field/value pairs of the record.
-- Returns {state, retries, next retry time or '', replaced corrupt (0/1)}.
local rec, id = KEYS[1], ARGV[2]
local now = tonumber(ARGV[1])
local permanent, counted, recovery = ARGV[3] == '1', ARGV[4] == '1', ARGV[5] == '1'
local max_retries = tonumber(ARGV[6])
local delays = cjson.decode(ARGV[8])
local agg = {KEYS[7], KEYS[8], KEYS[9]}
local task_id, window = ARGV[9], tonumber(ARGV[11])
if ARGV[10] ~= '' then
  local deadline = tonumber(redis.call('ZSCORE', KEYS[16], task_id))
  if not deadline or (ARGV[10] ~= 'any' and deadline > tonumber(ARGV[10])) then
    return {'skipped', 0, '', 0}
  end
end
redis.call('ZREM', KEYS[16], task_id)
redis.call('HDEL', KEYS[17], task_id)

local replaced = 0
local retries, failures, first, old_cat, attempts = 0, 1, now, nil, 0
if redis.call('EXISTS', rec) == 1 then
  if is_hash(rec) then
    local old = redis.call('HMGET', rec, 'retries', 'failures', 'first', 'cat', 'worker', 'query',
      'attempts')
    retries = tonumber(old[1]) or 0
    failures = (tonumber(old[2]) or 0) + 1
    first = tonumber(old[3]) or now
    old_cat = old[4]
    attempts = tonumber(old[7]) or 0
    if counted then retries = retries + 1 end
    agg_decr(agg[1], old[4])
    agg_decr(agg[2], old[5])
    agg_decr(agg[3], old[6])
  else
    replaced = 1
  end
  redis.call('DEL', rec)
end

local fields = {}
for i = 12, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('HSET', rec, unpack(fields))
local f = redis.call('HMGET', rec, 'cat', 'worker', 'query', 'fp', 'attempts')
-- a new failure keeps the recovery attempts counted so far
attempts = math.max(attempts, tonumber(f[5]) or 0)

local state, reason, next_at = 'failed', '', ''
if permanent then
  state, reason = 'dead', 'permanent error: not retried'
elseif retries >= max_retries then
  state, reason = 'dead', 'retries exhausted (' .. retries .. ')'
else
  next_at = now + (delays[retries + 1] or delays[#delays] or 0)
end
redis.call('HSET', rec, 'retries', retries, 'failures', failures, 'first', first,
  'last', now, 'state', state)
-- empty values are not stored (see records.to_redis): every field costs memory
if reason ~= '' then redis.call('HSET', rec, 'reason', reason) end
if next_at ~= '' then redis.call('HSET', rec, 'next', next_at) end
if attempts > 0 then redis.call('HSET', rec, 'attempts', attempts) end
redis.call('EXPIRE', rec, ARGV[7])

redis.call('ZREM', KEYS[4], id)
redis.call('ZREM', KEYS[14], id)
if f[1] == 'import' and state ~= 'dead' then
  local generation = tonumber(redis.call('HGET', KEYS[18], f[4] or '')) or 0
  redis.call('ZADD', KEYS[15], generation, id)
else
  redis.call('ZREM', KEYS[15], id)
end
-- live documents are indexed by first failure (age, retention), dead ones by death
if state == 'dead' then
  redis.call('ZREM', KEYS[2], id)
  redis.call('ZREM', KEYS[3], id)
  redis.call('ZADD', KEYS[5], now, id)
else
  redis.call('ZREM', KEYS[5], id)
  redis.call('ZADD', KEYS[3], first, id)
  redis.call('ZADD', KEYS[2], next_at, id)
end

agg_incr(agg[1], f[1])
agg_incr(agg[2], f[2])
agg_incr(agg[3], f[3])
agg_incr(KEYS[10], f[2])
agg_incr(KEYS[11], f[2])
agg_incr(KEYS[12], f[3])
agg_incr(KEYS[13], f[3])
redis.call('HINCRBY', KEYS[6], 'failures_recorded', 1)
if recovery then
  redis.call('HINCRBY', KEYS[6], 'failed_recoveries', 1)
  breaker_note(KEYS[19], old_cat or f[1], '0', window)
end
if state == 'dead' then redis.call('HINCRBY', KEYS[6], 'dead_total', 1) end
return {state, retries, tostring(next_at), replaced}
