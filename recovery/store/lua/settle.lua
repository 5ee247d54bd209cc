-- Finish a recovery run: mark what was resubmitted, release or hold back the rest.
-- KEYS: due claimed waiting stats superseded inflight
-- ARGV: now resend
-- Then one record key per item (item_key(i)) and three values per item: id, outcome
-- ('sent' | 'release' | 'wait'), and the new task id (sent) or the reason.
-- 'sent' counts a recovery attempt. The document stays claimed until its new task
-- checks in (begin.lua) or `resend` seconds pass: a task still queued behind a
-- backlog or stopped workers is neither resent nor counted before then, and one whose
-- message was lost is resent then, uncounted. The task id it replaces is marked
-- superseded: a broker redelivery of that old message is a stale duplicate.
-- 'release' puts a document back where it was (resubmission failed); 'wait' holds
-- it back, uncounted, until a run finds its precondition met (waiting index, scored
-- by when it was last probed).
-- A document whose new task already reported is left as that report made it; one
-- whose new task already checked in (a worker took the message before this settle)
-- is 'recovering' at once, its lease ending with that run's deadline.
local now = clock(A.now)
local sent = 0
for item = 1, item_args / 3 do
  local at = (item - 1) * 3
  local id, outcome, detail = item_arg(at + 1), item_arg(at + 2), item_arg(at + 3)
  local rec = item_key(item)
  local mine = is_hash(rec) and redis.call('HGET', rec, 'state') == 'claimed'
  if outcome == 'sent' then
    sent = sent + 1
    if is_hash(rec) then redis.call('HINCRBY', rec, 'attempts', '1') end
    if mine then
      local old = redis.call('HGET', rec, 'task_id')
      if old and old ~= '' then redis.call('ZADD', K.superseded, num(now), old) end
      local deadline = tonumber(redis.call('ZSCORE', K.inflight, detail))
      redis.call('ZADD', K.claimed, num(deadline or (now + tonumber(A.resend))), id)
      redis.call('HSET', rec, 'state', deadline and 'recovering' or 'sent', 'task_id', detail)
      redis.call('HDEL', rec, 'reason')
    end
  elseif mine and outcome == 'release' then
    requeue(K.claimed, K.due, id, rec, detail)
  elseif mine then
    redis.call('ZREM', K.claimed, id)
    redis.call('ZADD', K.waiting, num(now), id)
    redis.call('HSET', rec, 'state', 'waiting', 'reason', detail)
  end
end
redis.call('HINCRBY', K.stats, 'recovery_attempts', sent)
redis.call('HINCRBY', K.stats, 'recovery_runs', 1)
redis.call('HSET', K.stats, 'last_recovery_run', num(now))
return sent
