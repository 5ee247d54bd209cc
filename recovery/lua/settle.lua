-- Finish a recovery run: mark what was resubmitted, release or defer the rest.
-- KEYS[1] due  KEYS[2] claimed  KEYS[3] stats  KEYS[4] waiting  KEYS[5] superseded,
-- then one record hash per item (KEYS[5 + i] belongs to item i).
-- ARGV[1] now  ARGV[2] lease expiry for resubmitted documents, then per item four
-- values: id, outcome ('sent' | 'release' | 'wait'), task id (sent) or reason,
-- next due time (release/wait).
-- 'sent' counts a recovery attempt; its lease now covers the new task's run, so a
-- task that never reports returns the document to due. The task id it replaces is
-- marked superseded: a broker redelivery of that old message is a stale duplicate.
-- 'release' puts a document back (resubmission failed) and 'wait' defers it without
-- counting a retry.
-- A document whose new task already reported is left as that report made it.
local now, lease = tonumber(ARGV[1]), ARGV[2]
local sent = 0
local item = 0
for i = 3, #ARGV, 4 do
  item = item + 1
  local id, outcome, detail, next_at = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  local rec = KEYS[5 + item]
  local mine = is_hash(rec) and redis.call('HGET', rec, 'state') == 'claimed'
  if outcome == 'sent' then
    sent = sent + 1
    if is_hash(rec) then redis.call('HINCRBY', rec, 'attempts', 1) end
    if mine then
      local old = redis.call('HGET', rec, 'task_id')
      if old and old ~= '' then redis.call('ZADD', KEYS[5], now, old) end
      redis.call('ZADD', KEYS[2], lease, id)
      redis.call('HSET', rec, 'state', 'recovering', 'task_id', detail)
      redis.call('HDEL', rec, 'reason')
    end
  elseif mine then
    redis.call('ZREM', KEYS[2], id)
    redis.call('ZADD', KEYS[1], next_at, id)
    local state = outcome == 'wait' and 'waiting' or 'failed'
    if state == 'waiting' then redis.call('ZADD', KEYS[4], next_at, id) end
    redis.call('HSET', rec, 'state', state, 'reason', detail, 'next', next_at)
  end
end
redis.call('HINCRBY', KEYS[3], 'recovery_attempts', sent)
redis.call('HINCRBY', KEYS[3], 'recovery_runs', 1)
redis.call('HSET', KEYS[3], 'last_recovery_run', now)
return sent
