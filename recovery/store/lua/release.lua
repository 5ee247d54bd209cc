-- Return documents whose claim ran out to due (a dead one an operator retried, to
-- dead: see requeue), uncounted: a run that crashed between claim and settle
-- ('claimed'), a resubmission that never checked in within the resend bound ('sent':
-- still queued, or its message was lost), or a run whose in-flight entry ended
-- without a report ('recovering': a Celery retry or reject).
-- A run that checked in and then vanished is the in-flight sweep's to count.
-- KEYS: due claimed dead
-- ARGV: now token
-- Then one record key per id (item_key(i)) and the ids (item_arg(i)). token: '' takes
-- the claims that ran out by now; a claim's token (see claim.lua) gives back at once
-- those still under that claim (a run returning its batch), leaving alone any another
-- run has claimed since.
-- Returns the ids released.
local now, giving_back = clock(A.now), A.token ~= ''
local released = {}
for i = 1, item_args do
  local id, rec = item_arg(i), item_key(i)
  local score = tonumber(redis.call('ZSCORE', K.claimed, id))
  local hash = is_hash(rec)
  local ours = giving_back and hash and redis.call('HGET', rec, 'claim') == A.token
  if score and (ours or (not giving_back and score <= now)) then
    redis.call('ZREM', K.claimed, id)
    if hash then
      local state = redis.call('HGET', rec, 'state')
      local why = ({claimed = 'released', sent = 'resubmission never started; resent'})[state]
      requeue(K.claimed, K.due, K.dead, id, rec, why or 'run ended without a report')
      released[#released + 1] = id
    end
  end
end
return released
