-- Probe results for documents held back: a document whose precondition is met again
-- goes back to due where it was, one still held gets its probe time and reason.
-- KEYS: due waiting
-- ARGV: now
-- Then one record key per item (item_key(i)) and three values per item: id, verdict
-- ('open' | 'hold'), reason. A document no longer waiting (resolved, failed again,
-- deleted meanwhile) is left as it is. Returns the ids reopened.
local now = clock(A.now)
local reopened = {}
for item = 1, item_args / 3 do
  local at = (item - 1) * 3
  local id, verdict, reason = item_arg(at + 1), item_arg(at + 2), item_arg(at + 3)
  local rec = item_key(item)
  if redis.call('ZSCORE', K.waiting, id) and is_hash(rec)
      and redis.call('HGET', rec, 'state') == 'waiting' then
    if verdict == 'open' then
      redis.call('ZREM', K.waiting, id)
      redis.call('ZADD', K.due, num(due_score(rec)), id)
      redis.call('HSET', rec, 'state', 'failed')
      redis.call('HDEL', rec, 'reason')
      reopened[#reopened + 1] = id
    else
      redis.call('ZADD', K.waiting, num(now), id)
      redis.call('HSET', rec, 'reason', reason)
    end
  end
end
return reopened
