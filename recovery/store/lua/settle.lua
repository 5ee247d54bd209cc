-- Finish a recovery run: mark what was resubmitted, release or defer the rest.
-- KEYS: due claimed stats waiting superseded
-- ARGV: now lease
-- Then one record key per item (item_key(i)) and four values per item: id, outcome
-- ('sent' | 'release' | 'wait'), task id (sent) or reason, next due time
-- (release/wait). lease: expiry for resubmitted documents.
-- 'sent' counts a recovery attempt; its lease now covers the new task's run, so a
-- task that never reports returns the document to due. The task id it replaces is
-- marked superseded: a broker redelivery of that old message is a stale duplicate.
-- 'release' puts a document back (resubmission failed) and 'wait' defers it without
-- counting a retry.
-- A document whose new task already reported is left as that report made it.
local now, lease = tonumber(A.now), A.lease
local sent = 0
for item = 1, item_args / 4 do
  local at = (item - 1) * 4
  local id, outcome = item_arg(at + 1), item_arg(at + 2)
  local detail, next_at = item_arg(at + 3), item_arg(at + 4)
  local rec = item_key(item)
  local mine = is_hash(rec) and redis.call('HGET', rec, 'state') == 'claimed'
  if outcome == 'sent' then
    sent = sent + 1
    if is_hash(rec) then redis.call('HINCRBY', rec, 'attempts', 1) end
    if mine then
      local old = redis.call('HGET', rec, 'task_id')
      if old and old ~= '' then redis.call('ZADD', K.superseded, now, old) end
      redis.call('ZADD', K.claimed, lease, id)
      redis.call('HSET', rec, 'state', 'recovering', 'task_id', detail)
      redis.call('HDEL', rec, 'reason')
    end
  elseif mine then
    redis.call('ZREM', K.claimed, id)
    redis.call('ZADD', K.due, next_at, id)
    local state = outcome == 'wait' and 'waiting' or 'failed'
    if state == 'waiting' then redis.call('ZADD', K.waiting, next_at, id) end
    redis.call('HSET', rec, 'state', state, 'reason', detail, 'next', next_at)
  end
end
redis.call('HINCRBY', K.stats, 'recovery_attempts', sent)
redis.call('HINCRBY', K.stats, 'recovery_runs', 1)
redis.call('HSET', K.stats, 'last_recovery_run', now)
return sent
