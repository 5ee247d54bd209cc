-- Record one failure of a document: the record, its indexes and the aggregates.
-- KEYS: record due failed claimed waiting dead corrupt stats imports inflight inflight_tasks generations breakers by_category by_worker by_query worker_failures query_failures signatures signature_info signature_last deleted superseded
-- ARGV: now doc_id permanent counted recovery lane ttl task_id lost_run window cat worker query qlabel fp tlimit attempts retries body sig etype example event
-- permanent, counted, recovery: '0'/'1' (counted: this failure counts as a retry of a
-- document already tracked; recovery: the run was a recovery attempt).
-- lane: the backoff class ('1' network failures, '0' the rest).
-- A failure records facts — when, what, how many times; whether and when the document
-- may run again is decided by each recovery run with its own settings (claim.lua).
-- lost_run: '' for a reported failure; for a lost run found in the in-flight index,
-- 'any' (a redelivery found its own entry) or the deadline bound a sweep read with:
-- skipped unless the entry is still there (and, for a sweep, still past that bound),
-- so another sweep, a redelivery that checked in again, or a late report wins; one
-- whose entry this very report took (see event) is a 'duplicate'.
-- cat worker query fp tlimit attempts body: the record's fields (body: its encoded
-- call, error type and message; see records.py). qlabel: the name the query is counted
-- under in the aggregates (the query, or its head and a hash when long), kept in the
-- record only when it differs from the query.
-- retries: the record's retry count (0 in a worker's report): the count kept is at
-- least it, so a failure imported with the retries it already used is not retried
-- past the maximum.
-- A failure of a run whose document was deleted while it was sent or running
-- (remove.lua marked its task id) is dropped, and the first counted
-- ('dropped_after_delete'): the delete stands, nothing is tracked again.
-- A failure of a run that recovery has since replaced by a newer task (settle.lua
-- marked its task id superseded) is stale and dropped ('dropped_stale'): the newer run
-- decides the document's fate. Such a report comes late, from a host that was cut off
-- or out of its spool, and must not re-open a document the newer run processed.
-- Each failure is noted in the record's history (`hist`, see history_add), kept
-- across failures of the document and bounded.
-- sig: the error's signature; etype, example: its error type and the head of its
-- message, kept with its first occurrence (a JSON object built only then).
-- event: the id of a worker's report, else of the call ('' for none), kept in the
-- record (`ev`): the same report applied again — replayed from a worker's spool after
-- a failover lost the answer to a change the replicas had, or the call sent again by
-- redis-py after the connection dropped before its reply — is a 'duplicate' and
-- changes nothing.
-- Its counts are the script's first changes (count_first): a stats field it counts on
-- that is not a number refuses the call with nothing changed.
-- Returns {state ('failed' | 'dead' | 'skipped' | 'dropped' | 'stale' | 'duplicate'),
-- retries, replaced corrupt (0/1)}.
local rec, id = K.record, A.doc_id
local now = clock(A.now)
if A.lost_run ~= '' then
  local deadline = tonumber(redis.call('ZSCORE', K.inflight, A.task_id))
  if not deadline or (A.lost_run ~= 'any' and deadline > tonumber(A.lost_run)) then
    -- gone by this very report (its reply lost, the call sent again): a duplicate with
    -- the retries it left, by which a worker still ends a crash loop
    local f = is_hash(rec) and redis.call('HMGET', rec, 'ev', 'retries') or {}
    if A.event ~= '' and f[1] == A.event then return {'duplicate', whole(f[2]) or 0, 0} end
    return {'skipped', 0, 0}
  end
end
local dropped = deleted_run(K.deleted, K.stats, A.task_id)
if dropped then
  if dropped ~= true then return dropped end
  leave_flight(K.inflight, K.inflight_tasks, A.task_id)
  return {'dropped', 0, 0}
end
if A.task_id ~= '' and redis.call('ZSCORE', K.superseded, A.task_id) then
  local refused = count_first(K.stats, {'dropped_stale'})
  if refused then return refused end
  leave_flight(K.inflight, K.inflight_tasks, A.task_id)
  return {'stale', 0, 0}
end

local replaced, retries, failures, first, attempts, old_cat, past = 0, 0, 1, now, 0, nil, nil
-- one TYPE says both whether the key exists and whether it holds a record
local kind = redis.call('TYPE', rec)['ok']
local existed, old = kind ~= 'none', nil
if kind == 'hash' then
  old = redis.call('HMGET', rec, 'retries', 'failures', 'first', 'cat', 'worker', 'query',
    'attempts', 'qlabel', 'hist', 'ev')
  retries = whole(old[1]) or 0
  if A.event ~= '' and old[10] == A.event then
    leave_flight(K.inflight, K.inflight_tasks, A.task_id)
    return {'duplicate', retries, 0}
  end
  failures = (whole(old[2]) or 0) + 1
  first = tonumber(old[3]) or now
  old_cat = old[4]
  past = old[9]
  attempts = whole(old[7]) or 0
  if A.counted == '1' then retries = retries + 1 end
elseif existed then
  replaced = 1
end
local state, reason = 'failed', ''
if A.permanent == '1' then state, reason = 'dead', 'permanent error: not retried' end
-- per category too (a closed set, so a few fields): docrecovery_failures_total
local counts = {'failures_recorded', 'failures:' .. A.cat}
if state == 'dead' then counts[#counts + 1] = 'dead_total' end
if A.recovery == '1' then counts[#counts + 1] = 'failed_recoveries' end
local refused = count_first(K.stats, counts)
if refused then return refused end

leave_flight(K.inflight, K.inflight_tasks, A.task_id)
if old then
  agg_decr(K.by_category, old[4])
  agg_decr(K.by_worker, old[5])
  agg_decr(K.by_query, old[8] or query_of(old[6]))
end
if existed then redis.call('DEL', rec) end
-- the record's own counts (its run's recovery attempt; the retries a failure imported
-- from elsewhere used) stand unless the stored ones, this failure counted, are larger
attempts = math.max(attempts, tonumber(A.attempts) or 0)
retries = math.max(retries, tonumber(A.retries) or 0)

-- times as text once: formatting a number is a good part of this script's cost
local at = num(now)
local since = first == now and at or num(first)
local fields = {'state', state, 'retries', num(retries), 'failures', num(failures), 'first', since,
  'last', at, 'cat', A.cat, 'task_id', A.task_id, 'body', A.body,
  'hist', history_add(past, 'failed', at, A.task_id, A.worker, A.cat, A.tlimit)}
-- empty values are not stored: with millions of records every field costs memory
-- ('0' is a value too: a query or a worker may be named '0')
local optional = {'reason', reason, 'worker', A.worker, 'query', A.query,
  'qlabel', A.qlabel ~= query_of(A.query) and A.qlabel or '', 'fp', A.fp, 'tlimit', A.tlimit,
  'sig', A.sig, 'ev', A.event}
for i = 1, #optional, 2 do
  local value = optional[i + 1]
  if value ~= '' then
    fields[#fields + 1] = optional[i]
    fields[#fields + 1] = value
  end
end
-- the usual lane and no recovery attempt are what a missing field reads as
if A.lane ~= '0' then
  fields[#fields + 1] = 'lane'
  fields[#fields + 1] = A.lane
end
if attempts > 0 then
  fields[#fields + 1] = 'attempts'
  fields[#fields + 1] = num(attempts)
end
redis.call('HSET', rec, unpack(fields))
redis.call('EXPIRE', rec, A.ttl)

if existed then
  redis.call('ZREM', K.claimed, id)
  redis.call('ZREM', K.waiting, id)
  redis.call('ZREM', K.corrupt, id)
end
redis.call('ZADD', K.failed, since, id)
if state == 'dead' then
  redis.call('ZREM', K.due, id)
  redis.call('ZREM', K.imports, id)
  redis.call('ZADD', K.dead, at, id)
else
  if existed then redis.call('ZREM', K.dead, id) end
  local level = math.min(retries, MAX_LEVEL)
  local score = tonumber(A.lane) * LANE + level * LEVEL + now
  redis.call('ZADD', K.due, score == now and at or num(score), id)
  if A.cat == 'import' then
    local generation = tonumber(redis.call('HGET', K.generations, A.fp)) or 0
    redis.call('ZADD', K.imports, generation, id)
  elseif existed then
    redis.call('ZREM', K.imports, id)
  end
end

agg_incr(K.by_category, A.cat)
agg_incr(K.by_worker, A.worker)
agg_incr(K.by_query, A.qlabel)
agg_incr(K.worker_failures, A.worker)
agg_incr(K.query_failures, A.qlabel)
if redis.call('HINCRBY', K.signatures, A.sig, '1') == 1 then
  local info = cjson.encode({error_type = A.etype, category = A.cat, example = A.example})
  redis.call('HSETNX', K.signature_info, A.sig, '{"first":' .. at .. ',' .. string.sub(info, 2))
end
redis.call('HSET', K.signature_last, A.sig, at)
if A.recovery == '1' then
  breaker_note(K.breakers, old_cat or A.cat, '0', tonumber(A.window))
end
return {state, retries, replaced}
