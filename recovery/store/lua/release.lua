-- Return claimed documents to due: leases that expired (a run or a resubmitted task
-- that never reported) or, with force, any claim (a run giving its batch back).
-- KEYS: due claimed dead stats failed waiting
-- ARGV: now force max_retries
-- Then one record key per id (item_key(i)) and the ids (item_arg(i)). force: '0'/'1'.
-- A resubmitted task that never reported used up its attempt: the retry is counted,
-- and a document out of retries goes dead instead of looping.
-- Returns {released ids, dead ids}.
local now, force, max_retries = tonumber(A.now), A.force == '1', tonumber(A.max_retries)
local released, dead = {}, {}
for i = 1, item_args do
  local id, rec = item_arg(i), item_key(i)
  local score = tonumber(redis.call('ZSCORE', K.claimed, id))
  if score and (force or score <= now) then
    redis.call('ZREM', K.claimed, id)
    if is_hash(rec) then
      local f = redis.call('HMGET', rec, 'state', 'retries')
      local retries = tonumber(f[2]) or 0
      if f[1] == 'recovering' then
        retries = retries + 1
        redis.call('HINCRBY', K.stats, 'failed_recoveries', 1)
      end
      redis.call('HSET', rec, 'retries', retries)
      if retries >= max_retries and f[1] == 'recovering' then
        bury(K, id, rec, now, 'resubmitted task never reported; retries exhausted')
        dead[#dead + 1] = id
      else
        redis.call('ZADD', K.due, now, id)
        redis.call('HSET', rec, 'state', 'failed', 'reason', force and 'released' or 'lease expired',
          'next', now)
        released[#released + 1] = id
      end
    end
  end
end
return {released, dead}
