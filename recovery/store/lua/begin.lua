-- A tracked task run starts: guard against stale duplicates and lost runs.
-- KEYS: superseded inflight inflight_tasks record due claimed waiting
-- ARGV: now task_id deadline call doc_id
-- call: JSON of the run (see records.RunCall), kept until the run reports.
-- Returns {verdict, state of the document's record or ''}:
--   'stale' — the task id was replaced by a recovery resubmission: drop this message;
--   'lost'  — this task id already has an in-flight entry, so a run of it died
--             without a word (killed child or node): report that, then begin again;
--   'run'   — in flight now until the deadline. A tracked document that was waiting
--             for recovery is taken out of due, so recovery does not send it twice.
local tid, id, deadline = A.task_id, A.doc_id, A.deadline
if redis.call('ZSCORE', K.superseded, tid) then
  return {'stale', ''}
end
if redis.call('ZSCORE', K.inflight, tid) then
  return {'lost', ''}
end
redis.call('ZADD', K.inflight, deadline, tid)
redis.call('HSET', K.inflight_tasks, tid, A.call)
local state = ''
if is_hash(K.record) then
  state = redis.call('HGET', K.record, 'state') or ''
  if state == 'failed' or state == 'waiting' then
    redis.call('ZREM', K.due, id)
    redis.call('ZREM', K.waiting, id)
    redis.call('ZADD', K.claimed, deadline, id)
    redis.call('HSET', K.record, 'state', 'recovering', 'task_id', tid, 'rec_at', A.now)
  elseif state == 'recovering' and redis.call('HGET', K.record, 'task_id') == tid then
    -- a resubmission that starts late keeps its lease until its own deadline
    redis.call('ZADD', K.claimed, 'GT', deadline, id)
  end
end
return {'run', state}
