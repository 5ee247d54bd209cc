-- Record one failure of a document: the record, its indexes and the aggregates.
-- KEYS: record due failed claimed dead stats by_category by_worker by_query worker_failures worker_processed query_failures query_processed waiting imports inflight inflight_tasks generations breakers
-- ARGV: now doc_id permanent counted recovery max_retries ttl delays task_id lost_run window
-- Then field/value pairs of the record.
-- permanent, counted, recovery: '0'/'1' (counted: this failure counts as a retry when
-- the document is already tracked; recovery: the run was a recovery attempt).
-- delays: JSON list of backoff delays, indexed by retry count. task_id: the run that
-- failed (its in-flight entry is cleared). lost_run: '' for a reported failure; for a
-- lost run found in the in-flight index, 'any' (a redelivery found its own entry) or
-- the deadline bound a sweep read with: skipped unless the entry is still there (and,
-- for a sweep, still past that bound), so another sweep, a redelivery that checked in
-- again, or a late report wins. window: the circuit-breaker window.
-- Returns {state, retries, next retry time or '', replaced corrupt (0/1)}.
local rec, id = K.record, A.doc_id
local now = tonumber(A.now)
local permanent, counted, recovery = A.permanent == '1', A.counted == '1', A.recovery == '1'
local max_retries = tonumber(A.max_retries)
local delays = cjson.decode(A.delays)
local agg = {K.by_category, K.by_worker, K.by_query}
if A.lost_run ~= '' then
  local deadline = tonumber(redis.call('ZSCORE', K.inflight, A.task_id))
  if not deadline or (A.lost_run ~= 'any' and deadline > tonumber(A.lost_run)) then
    return {'skipped', 0, '', 0}
  end
end
redis.call('ZREM', K.inflight, A.task_id)
redis.call('HDEL', K.inflight_tasks, A.task_id)

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
for i = 1, item_args do fields[i] = item_arg(i) end
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
if next_at ~= '' then redis.call('HSET', rec, 'next', next_at) end
if attempts > 0 then redis.call('HSET', rec, 'attempts', attempts) end
redis.call('EXPIRE', rec, A.ttl)

if f[1] == 'import' and state ~= 'dead' then
  local generation = tonumber(redis.call('HGET', K.generations, f[4] or '')) or 0
  redis.call('ZADD', K.imports, generation, id)
else
  redis.call('ZREM', K.imports, id)
end
-- live documents are indexed by first failure (age, retention), dead ones by death
if state == 'dead' then
  bury(K, id, rec, now, reason)
else
  redis.call('ZREM', K.claimed, id)
  redis.call('ZREM', K.waiting, id)
  redis.call('ZREM', K.dead, id)
  redis.call('ZADD', K.failed, first, id)
  redis.call('ZADD', K.due, next_at, id)
end

agg_incr(agg[1], f[1])
agg_incr(agg[2], f[2])
agg_incr(agg[3], f[3])
agg_incr(K.worker_failures, f[2])
agg_incr(K.worker_processed, f[2])
agg_incr(K.query_failures, f[3])
agg_incr(K.query_processed, f[3])
redis.call('HINCRBY', K.stats, 'failures_recorded', 1)
if recovery then
  redis.call('HINCRBY', K.stats, 'failed_recoveries', 1)
  breaker_note(K.breakers, old_cat or f[1], '0', tonumber(A.window))
end
return {state, retries, tostring(next_at), replaced}
