-- A tracked task run starts: guard against stale duplicates and lost runs.
-- KEYS[1] superseded  KEYS[2] inflight  KEYS[3] inflight-tasks  KEYS[4] record hash
-- KEYS[5] due  KEYS[6] claimed  KEYS[7] waiting
-- ARGV[1] now  ARGV[2] task id  ARGV[3] deadline  ARGV[4] JSON of the call  ARGV[5] doc id
-- Returns {verdict, state of the document's record or ''}:
--   'stale' — the task id was replaced by a recovery resubmission: drop this message;
--   'lost'  — this task id already has an in-flight entry, so a run of it died
--             without a word (killed child or node): report that, then begin again;
--   'run'   — in flight now until the deadline. A tracked document that was waiting
--             for recovery is taken out of due, so recovery does not send it twice.
local tid, id, deadline = ARGV[2], ARGV[5], ARGV[3]
if redis.call('ZSCORE', KEYS[1], tid) then
  return {'stale', ''}
end
if redis.call('ZSCORE', KEYS[2], tid) then
  return {'lost', ''}
end
redis.call('ZADD', KEYS[2], deadline, tid)
redis.call('HSET', KEYS[3], tid, ARGV[4])
local state = ''
if is_hash(KEYS[4]) then
  state = redis.call('HGET', KEYS[4], 'state') or ''
  if state == 'failed' or state == 'waiting' then
    redis.call('ZREM', KEYS[5], id)
    redis.call('ZREM', KEYS[7], id)
    redis.call('ZADD', KEYS[6], deadline, id)
    redis.call('HSET', KEYS[4], 'state', 'recovering', 'task_id', tid, 'rec_at', ARGV[1])
  elseif state == 'recovering' and redis.call('HGET', KEYS[4], 'task_id') == tid then
    -- a resubmission that starts late keeps its lease until its own deadline
    redis.call('ZADD', KEYS[6], 'GT', deadline, id)
  end
end
return {'run', state}
