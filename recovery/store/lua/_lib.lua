-- Shared library, loaded after the prelude that binds K (keys) and A (arguments) by
-- the names each script declares in its header (see recovery/store/scripts.py).
-- Record hash fields (see recovery/records.py): path query task args kwargs task_id
-- etype cat msg first last retries attempts failures worker meta state reason next
-- rec_at fp tlimit nargs. Only names passed in KEYS are ever touched.

local function is_hash(key)
  return redis.call('TYPE', key)['ok'] == 'hash'
end

-- Count one tracked document out of an aggregate hash, dropping fields that reach 0.
local function agg_decr(hash, field)
  if field and field ~= '' then
    if redis.call('HINCRBY', hash, field, -1) <= 0 then
      redis.call('HDEL', hash, field)
    end
  end
end

local function agg_incr(hash, field)
  if field and field ~= '' then
    redis.call('HINCRBY', hash, field, 1)
  end
end

-- Take a document out of every index and aggregate, and delete its record.
-- idx: list of sorted-set keys; agg: {category, worker, query} hash keys.
local function untrack(idx, agg, rec, id)
  if is_hash(rec) then
    local f = redis.call('HMGET', rec, 'cat', 'worker', 'query')
    agg_decr(agg[1], f[1])
    agg_decr(agg[2], f[2])
    agg_decr(agg[3], f[3])
  end
  for _, key in ipairs(idx) do
    redis.call('ZREM', key, id)
  end
  redis.call('DEL', rec)
end

-- Stop retrying a document: out of the live indexes, into dead (scored by now),
-- with its reason. Needs K.due, K.waiting, K.failed, K.claimed, K.dead and K.stats.
local function bury(keys, id, rec, now, reason)
  redis.call('ZREM', keys.due, id)
  redis.call('ZREM', keys.waiting, id)
  redis.call('ZREM', keys.failed, id)
  redis.call('ZREM', keys.claimed, id)
  redis.call('ZADD', keys.dead, now, id)
  redis.call('HSET', rec, 'state', 'dead', 'reason', reason)
  redis.call('HDEL', rec, 'next')
  redis.call('HINCRBY', keys.stats, 'dead_total', 1)
end

-- Append one recovery outcome ('1' success, '0' failure) to a category's breaker
-- window: a string of the last `window` outcomes, oldest first.
local function breaker_note(hash, category, outcome, window)
  if category and category ~= '' then
    local seen = (redis.call('HGET', hash, category) or '') .. outcome
    redis.call('HSET', hash, category, string.sub(seen, -window))
  end
end
