-- Return documents whose claim ran out to due (a dead one an operator retried, to
-- dead: see requeue), uncounted: a run that crashed between claim and settle
-- ('claimed'), a resubmission that never checked in within the resend bound ('sent':
-- still queued, or its message was lost), or a run whose in-flight entry ended
-- without a report ('recovering': a Celery retry or reject).
-- A run that checked in and then vanished is the in-flight sweep's to count.
-- KEYS: due claimed dead
-- ARGV: now force
-- Then one record key per id (item_key(i)) and the ids (item_arg(i)). force: '1'
-- gives back any claim at once (a run returning its batch).
-- Returns the ids released.
local now, force = clock(A.now), A.force == '1'
local released = {}
for i = 1, item_args do
  local id, rec = item_arg(i), item_key(i)
  local score = tonumber(redis.call('ZSCORE', K.claimed, id))
  if score and (force or score <= now) then
    redis.call('ZREM', K.claimed, id)
    if is_hash(rec) then
      local state = redis.call('HGET', rec, 'state')
      local why = ({claimed = 'released', sent = 'resubmission never started; resent'})[state]
      requeue(K.claimed, K.due, K.dead, id, rec, why or 'run ended without a report')
      released[#released + 1] = id
    end
  end
end
return released
