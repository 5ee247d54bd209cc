-- Finish a recovery run: mark what was resubmitted, release or hold back the rest.
-- KEYS: due claimed dead waiting stats superseded inflight series series_buckets settled
-- ARGV: now resend step keep token lease
-- Then one record key per item (item_key(i)) and three values per item: id, outcome
-- ('sent' | 'release' | 'wait'), and the new task id (sent) or the reason.
-- 'sent' counts a recovery attempt. The document stays claimed until its new task
-- checks in (begin.lua) or `resend` seconds pass: a task still queued behind a
-- backlog or stopped workers is neither resent nor counted before then, and one whose
-- message was lost is resent then, uncounted. The task id it replaces is marked
-- superseded: a broker redelivery of that old message is a stale duplicate.
-- Only a document still under this run's claim (`token`, see claim.lua) is changed: one
-- whose lease ran out and that another run has claimed since is that run's to settle.
-- 'release' puts a document back where it was (resubmission failed); 'wait' holds
-- it back, uncounted, until a run finds its precondition met (waiting index, scored
-- by when it was last probed).
-- A document whose new task already reported is left as that report made it, its
-- attempt counted by the report (record_failure.lua keeps the report's attempt number):
-- counting it here too would count it twice. One whose new task already checked in (a
-- worker took the message before this settle) is 'recovering' at once, its lease
-- ending with that run's deadline.
-- step, keep: the recoveries-over-time series' bucket width (s) and buckets kept.
-- settled: this claim's mark in this shard, set to what the settle returns and kept
-- `lease` seconds (the claim's). A settle applied again under the same token (its
-- reply was lost: redis-py retried it after a dropped connection, or a soft time limit
-- cut the run off and its guard settles what it sent) returns that and changes and
-- counts nothing: 'sent' is counted whether or not the document is still under the
-- claim, so without the mark it would count the run and its resubmissions again. Each
-- shard keeps its own mark, so a settle cut off between shards completes the others.
-- A resubmission is noted in the document's history (record_failure.lua notes each
-- failure), bounded by HISTORY_KEEP.
local settled = redis.call('GET', K.settled)
if settled then return tonumber(settled) end
-- A stats field the run is counted in (or the series copies) that is not a number
-- refuses the call (stats_refusal), but only once its documents are settled: they were
-- sent, and left claimed they would be sent again when the lease ends.
local refused = stats_refusal(K.stats, {'recovery_attempts', 'recovery_runs',
  'failed_recoveries'})
local now = clock(A.now)
local sent = 0
-- formatted once for the whole batch
local stamp, resend_at = num(now), num(now + tonumber(A.resend))
for item = 1, item_args / 3 do
  local at = (item - 1) * 3
  local id, outcome, detail = item_arg(at + 1), item_arg(at + 2), item_arg(at + 3)
  local rec = item_key(item)
  local f = is_hash(rec) and redis.call('HMGET', rec, 'state', 'task_id', 'hist', 'claim')
  local mine = f and f[1] == 'claimed' and f[4] == A.token
  if outcome == 'sent' then
    sent = sent + 1
    if mine then
      redis.call('HINCRBY', rec, 'attempts', '1')
      local old = f[2]
      if old and old ~= '' then redis.call('ZADD', K.superseded, stamp, old) end
      local deadline = tonumber(redis.call('ZSCORE', K.inflight, detail))
      redis.call('ZADD', K.claimed, deadline and num(deadline) or resend_at, id)
      redis.call('HSET', rec, 'state', deadline and 'recovering' or 'sent', 'task_id', detail,
        'hist', history_add(f[3], 'resubmitted', stamp, detail))
      redis.call('HDEL', rec, 'reason', 'claim')
    end
  elseif mine and outcome == 'release' then
    requeue(K.claimed, K.due, K.dead, id, rec, detail)
  elseif mine then
    redis.call('ZREM', K.claimed, id)
    redis.call('ZADD', K.waiting, stamp, id)
    redis.call('HSET', rec, 'state', 'waiting', 'reason', detail)
    redis.call('HDEL', rec, 'claim')
  end
end
if refused then return refused end
redis.call('HINCRBY', K.stats, 'recovery_attempts', sent)
redis.call('HINCRBY', K.stats, 'recovery_runs', 1)
redis.call('HSET', K.stats, 'last_recovery_run', num(now))
series_note(K.series, K.series_buckets, K.stats, now, tonumber(A.step), tonumber(A.keep), 'sent', sent)
redis.call('SET', K.settled, sent, 'EX', A.lease)
return sent
