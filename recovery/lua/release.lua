-- Return claimed documents to due: leases that expired (a run or a resubmitted task
-- that never reported) or, with force, any claim (a run giving its batch back).
-- KEYS[1] due  KEYS[2] claimed  KEYS[3] dead  KEYS[4] stats  KEYS[5] failed, then one
-- record hash per id (KEYS[5 + i] belongs to ARGV[3 + i]).
-- ARGV[1] now  ARGV[2] force (0/1)  ARGV[3] max retries  ARGV[4..] ids.
-- A resubmitted task that never reported used up its attempt: the retry is counted,
-- and a document out of retries goes dead instead of looping.
-- Returns {released ids, dead ids}.
local now, force, max_retries = tonumber(ARGV[1]), ARGV[2] == '1', tonumber(ARGV[3])
local released, dead = {}, {}
for i = 4, #ARGV do
  local id, rec = ARGV[i], KEYS[i + 2]
  local score = tonumber(redis.call('ZSCORE', KEYS[2], id))
  if score and (force or score <= now) then
    redis.call('ZREM', KEYS[2], id)
    if is_hash(rec) then
      local f = redis.call('HMGET', rec, 'state', 'retries')
      local retries = tonumber(f[2]) or 0
      if f[1] == 'recovering' then
        retries = retries + 1
        redis.call('HINCRBY', KEYS[4], 'failed_recoveries', 1)
      end
      if retries >= max_retries and f[1] == 'recovering' then
        redis.call('ZREM', KEYS[5], id)
        redis.call('ZADD', KEYS[3], now, id)
        redis.call('HSET', rec, 'state', 'dead', 'retries', retries,
          'reason', 'resubmitted task never reported; retries exhausted')
        redis.call('HDEL', rec, 'next')
        redis.call('HINCRBY', KEYS[4], 'dead_total', 1)
        dead[#dead + 1] = id
      else
        redis.call('ZADD', KEYS[1], now, id)
        redis.call('HSET', rec, 'state', 'failed', 'retries', retries,
          'reason', force and 'released' or 'lease expired', 'next', now)
        released[#released + 1] = id
      end
    end
  end
end
return {released, dead}
