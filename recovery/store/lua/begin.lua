-- A tracked task run starts: guard against stale duplicates and lost runs.
-- KEYS: superseded inflight inflight_tasks record due claimed waiting
-- ARGV: now task_id limit call doc_id
-- limit: seconds the run may take (its time limit and a grace) before a sweep
-- counts it lost; call: JSON of the run (see calls.RunCall), kept until it reports,
-- with a random id of this check-in (`checkin`), so no other check-in stores the same.
-- Returns {verdict, state of the document's record or ''}:
--   'stale' — the task id was replaced by a recovery resubmission: drop this message;
--   'lost'  — this task id already has an in-flight entry of another check-in, so a
--             run of it died without a word (killed child or node): report that, then
--             begin again;
--   'run'   — in flight now until its deadline. A tracked document waiting for
--             recovery is taken out of due, so recovery does not send it twice, and
--             a resubmission that checks in is an attempt under way ('recovering').
--             An entry that is this very call's (applied before and its reply lost:
--             redis-py sends a call again when the connection drops before the
--             reply) is this run's: 'run', changing nothing, with the state as it is.
local tid, id = A.task_id, A.doc_id
local now = clock(A.now)
local deadline = now + tonumber(A.limit)
if redis.call('ZSCORE', K.superseded, tid) then
  return {'stale', ''}
end
if redis.call('ZSCORE', K.inflight, tid) then
  if redis.call('HGET', K.inflight_tasks, tid) == A.call then
    return {'run', is_hash(K.record) and redis.call('HGET', K.record, 'state') or ''}
  end
  return {'lost', ''}
end
redis.call('ZADD', K.inflight, num(deadline), tid)
redis.call('HSET', K.inflight_tasks, tid, A.call)
local state = ''
if is_hash(K.record) then
  state = redis.call('HGET', K.record, 'state') or ''
  local mine = redis.call('HGET', K.record, 'task_id') == tid
  if state == 'failed' or state == 'waiting' then
    redis.call('ZREM', K.due, id)
    redis.call('ZREM', K.waiting, id)
    redis.call('ZADD', K.claimed, num(deadline), id)
    redis.call('HSET', K.record, 'state', 'recovering', 'task_id', tid, 'rec_at', num(now))
  elseif (state == 'sent' or state == 'recovering') and mine then
    -- the resubmission checked in: its lease now ends with its own deadline
    redis.call('ZADD', K.claimed, num(deadline), id)
    redis.call('HSET', K.record, 'state', 'recovering')
  end
end
return {'run', state}
