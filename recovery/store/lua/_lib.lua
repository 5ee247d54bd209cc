-- Shared library, loaded before each script, whose K.<key> and A.<arg> the loader
-- binds to positions by the names its header declares (see recovery/store/scripts.py).
--
-- Record hash fields (see recovery/records.py): state reason retries attempts failures
-- first last cat worker query qlabel task_id rec_at fp tlimit dscore dead claim lane sig
-- hist ev body (ev: the last failure report applied, see record_failure.lua; dead: see
-- requeue; claim: the token of the claim that holds it, see claim.lua).
-- Only names passed in KEYS are ever touched.
--
-- The due index holds every live document waiting for recovery in one sorted set,
-- scored by lane * LANE + retries * LEVEL + its last attempt. A lane is a backoff
-- class (0 the usual one, 1 network failures, whose backoff is short); a run reads
-- each (lane, retry level) as a score range bounded by its own backoff.

-- A number as text, in full: Lua's own tostring and '..' keep 14 significant digits,
-- which cuts a time's fraction at a score boundary; 17 keep it. (redis.call writes a
-- Lua number argument in full by itself: see ranges().) A whole number takes the
-- integer form, the same text for less work (formatting floating point is a good
-- share of what the scripts cost); so do constant arguments, given as strings ('1',
-- not 1).
local function num(x)
  if x == math.floor(x) and x > -1e15 and x < 1e15 then
    return string.format('%d', x)
  end
  return string.format('%.17g', x)
end

local LANE, LEVEL = 1e12, 1e10
-- Retry counts above this share its level (no run retries past max_retry_count <= it).
local MAX_LEVEL = 99

-- {lane, level, last attempt} of a due score.
local function split(score)
  local lane = math.floor(score / LANE)
  local level = math.floor((score - lane * LANE) / LEVEL)
  return lane, level, score - lane * LANE - level * LEVEL
end

-- A document's share of the run's jitter, in [0, 1): fixed by its id, so every run and
-- status agree on it, and it only ever adds to the backoff.
local function spread(id)
  return (tonumber(string.sub(id, 1, 4), 16) or 0) / 65536
end

-- Whether a due document is eligible now under a run's delays and jitter.
local function eligible(delays, jitter, id, score, now)
  local lane, level, last = split(score)
  local delay = (delays[lane + 1] or {})[level + 1]
  if not delay then return false end
  return delay < 0 or now - last >= delay * (1 + jitter * spread(id))
end

-- Each (lane, level) range a run may take from, with its upper bound at `now`
-- (before each document's jitter, which eligible() adds):
-- delays[lane + 1][level + 1] is the run's backoff; negative means any last attempt.
-- Each bound goes to redis.call as cheaply as it stays exact: the lower one, a whole
-- number, as '%d' text; the upper one as a Lua number, which redis.call writes in
-- full itself (%.17g; from Redis 7.2 the shortest exact text) for less than num()
-- takes (num() on both bounds was a fifth of report.lua's time).
local function ranges(delays, now)
  local out = {}
  for lane, levels in ipairs(delays) do
    for level, delay in ipairs(levels) do
      local low = (lane - 1) * LANE + (level - 1) * LEVEL
      local high = delay < 0 and (low + LEVEL - 1) or (low + now - delay)
      out[#out + 1] = {string.format('%d', low), high}
    end
  end
  return out
end

-- One clock for every deadline, lease and age: the caller's time when it passed one
-- (tests, replayed events), else this server's.
local function clock(given)
  local t = tonumber(given)
  if t then return t end
  local now = redis.call('TIME')
  return tonumber(now[1]) + tonumber(now[2]) / 1e6
end

local function is_hash(key)
  return redis.call('TYPE', key)['ok'] == 'hash'
end

-- A strict whole number, or nil: what Python's int() takes but Redis's HINCRBY
-- refuses ('02', ' 2', '1_0', 20 digits: past a 64-bit integer) is not one.
local function whole(raw)
  if type(raw) == 'string' and string.match(raw, '^%-?[1-9]%d*$') or raw == '0' then
    if #raw <= 18 then return tonumber(raw) end
  end
  return nil
end

-- A strict decimal number, or nil: the forms Python's records.py reads ('-?d+', an
-- optional '.d+', an optional exponent), not what tonumber also takes (' 2', '0x10',
-- 'inf', 'nan', '2.').
local DECIMALS = {'^%-?%d+$', '^%-?%d+%.%d+$', '^%-?%d+[eE][-+]?%d+$', '^%-?%d+%.%d+[eE][-+]?%d+$'}
local function decimal(raw)
  if type(raw) ~= 'string' then return nil end
  for _, pattern in ipairs(DECIMALS) do
    local value = string.match(raw, pattern) and tonumber(raw)
    -- '1e5000' reads as infinity, which HINCRBYFLOAT refuses
    if value and math.abs(value) < math.huge then return value end
  end
  return nil
end

-- The error a script returns instead of counting on a stats field that holds `value`,
-- not a number (set by hand, a bad restore): HINCRBY would fail on it halfway through
-- the script, and Redis keeps what the script wrote before. So a script returns it
-- before it changes anything (settle.lua: once its documents are settled), and a
-- worker's event is refused whole, spooled (CorruptCounter, a refusal) and replayed
-- once it is repaired.
local function bad_counter(stats, name, value)
  local named = cjson.encode({stats, name, string.sub(value, 1, 200)})
  return redis.error_reply('BADCOUNTER ' .. named)
end

-- bad_counter's error for the first of the stats fields a script adds to that is not
-- a number: `counts` (HINCRBY: whole numbers) and `sums` (HINCRBYFLOAT: decimals, such
-- as seconds; absent for none); nil when all are numbers or absent. Read before the
-- script changes anything.
local function stats_refusal(stats, counts, sums)
  sums = sums or {}
  local fields = {unpack(counts)}
  for _, name in ipairs(sums) do fields[#fields + 1] = name end
  local values = redis.call('HMGET', stats, unpack(fields))
  for i, name in ipairs(counts) do
    if values[i] and whole(values[i]) == nil then return bad_counter(stats, name, values[i]) end
  end
  for i, name in ipairs(sums) do
    local value = values[#counts + i]
    if value and decimal(value) == nil then return bad_counter(stats, name, value) end
  end
  return nil
end

-- Count each of the stats `fields` (counts, not sums) up by one, as a script's first
-- change: HINCRBY refuses a field that is not a whole number, and a count it leaves
-- past what `whole` reads is refused too; the counts made are then taken back and
-- bad_counter's error returned, so nothing has changed. Any other error (no replicas,
-- out of memory: before the first write) is returned as it came. No read first: on
-- the failure path reading the fields (stats_refusal) was a tenth of the script's time.
local function count_first(stats, fields)
  for i, name in ipairs(fields) do
    local n = redis.pcall('HINCRBY', stats, name, '1')
    local counted = type(n) == 'number'
    if not counted or n >= 1e18 or n <= -1e17 then
      -- taken back: a count back at 0 reads as one never made (absent)
      for j = 1, counted and i or i - 1 do
        if redis.call('HINCRBY', stats, fields[j], '-1') == 0 then
          redis.call('HDEL', stats, fields[j])
        end
      end
      local value = redis.call('HGET', stats, name)
      if counted or (value and whole(value) == nil) then return bad_counter(stats, name, value) end
      return n
    end
  end
  return nil
end

-- Count one tracked document out of an aggregate hash, dropping fields that reach 0.
local function agg_decr(hash, field)
  if field and field ~= '' then
    if redis.call('HINCRBY', hash, field, '-1') <= 0 then
      redis.call('HDEL', hash, field)
    end
  end
end

-- The query a document is counted under in the per-query aggregates: documents
-- processed without one are counted too, as '(no query)'.
local function query_of(query)
  if query == false or query == nil or query == '' then return '(no query)' end
  return query
end

local function agg_incr(hash, field)
  if field and field ~= '' then
    redis.call('HINCRBY', hash, field, '1')
  end
end

-- Whether `task` is a run of a document deleted while it was sent or running
-- (remove.lua marked it, scored by when). The mark stays until retention trims it, so
-- every outcome of that run is dropped — a redelivery's as much as one replayed from
-- a spool after a failover — and counted once: the first turns the score negative.
-- Counted first (count_first): bad_counter's error when dropped_after_delete is not a
-- number, with nothing changed.
local function deleted_run(deleted, stats, task)
  local mark = tonumber(redis.call('ZSCORE', deleted, task))
  if not mark then return false end
  if mark > 0 then
    local refused = count_first(stats, {'dropped_after_delete'})
    if refused then return refused end
    redis.call('ZADD', deleted, num(-mark), task)
  end
  return true
end

-- Take a reported run out of flight (begin.lua checked it in): its entry in the
-- in-flight index and, when that was there, its call.
local function leave_flight(inflight, inflight_tasks, task)
  if redis.call('ZREM', inflight, task) == 1 then
    redis.call('HDEL', inflight_tasks, task)
  end
end

-- Take a document out of every index and aggregate, and delete its record.
-- idx: list of sorted-set keys; agg: {category, worker, query} hash keys.
local function untrack(idx, agg, rec, id)
  if is_hash(rec) then
    local f = redis.call('HMGET', rec, 'cat', 'worker', 'query', 'qlabel')
    agg_decr(agg[1], f[1])
    agg_decr(agg[2], f[2])
    agg_decr(agg[3], f[4] or query_of(f[3]))
  end
  for _, key in ipairs(idx) do
    redis.call('ZREM', key, id)
  end
  redis.call('DEL', rec)
end

-- The due score a document had when it was claimed (else the one its facts give; for
-- a dead one, its score in dead): a claim that did not end in an attempt (released,
-- never started, held back) puts it back there, having used up nothing.
local function due_score(rec)
  local score = tonumber(redis.call('HGET', rec, 'dscore'))
  if score then return score end
  local f = redis.call('HMGET', rec, 'retries', 'last', 'lane')
  local level = math.min(whole(f[1]) or 0, MAX_LEVEL)
  return (whole(f[3]) or 0) * LANE + level * LEVEL + (tonumber(f[2]) or 0)
end

-- A dead document an operator's retry claimed keeps its dead reason in `dead`
-- (claim.lua): a retry that brought no verdict (refused by the broker, never started,
-- ended without a report) puts it back in dead as it was, not in due, where every run
-- would resend a permanent failure. A report of the retry rewrites the record instead.
local function requeue(claimed, due, dead, id, rec, reason)
  redis.call('ZREM', claimed, id)
  local was = redis.call('HGET', rec, 'dead')
  if was then
    redis.call('ZADD', dead, num(due_score(rec)), id)
    redis.call('HSET', rec, 'state', 'dead', 'reason', was)
    redis.call('HDEL', rec, 'dead', 'claim')
  else
    redis.call('ZADD', due, num(due_score(rec)), id)
    redis.call('HSET', rec, 'state', 'failed', 'reason', reason)
    redis.call('HDEL', rec, 'claim')
  end
end

-- Append one recovery outcome ('1' success, '0' failure) to a category's breaker
-- window: a string of the last `window` outcomes, oldest first.
local function breaker_note(hash, category, outcome, window)
  if category and category ~= '' then
    local seen = (redis.call('HGET', hash, category) or '') .. outcome
    redis.call('HSET', hash, category, string.sub(seen, -window))
  end
end

-- Recoveries over time: add `by` to `field` ('sent' or 'ok') of the bucket `now` falls
-- in (`step` seconds wide) and note the failed recoveries counted so far there (the
-- failures per bucket are the differences; record_failure.lua counts them). Opening a
-- bucket trims those more than `keep` buckets old, keeping the last trimmed count as
-- `base`, so the series stays bounded and its oldest bucket still has a baseline.
local function series_note(hash, buckets, stats, now, step, keep, field, by)
  local bucket = string.format('%d', math.floor(now / step) * step)
  local failed = redis.call('HGET', stats, 'failed_recoveries') or '0'
  redis.call('HSETNX', hash, 'base', failed)
  if redis.call('ZADD', buckets, 'NX', bucket, bucket) == 1 then
    local bound = '(' .. string.format('%d', tonumber(bucket) - (keep - 1) * step)
    for _, old in ipairs(redis.call('ZRANGEBYSCORE', buckets, '-inf', bound)) do
      local last = redis.call('HGET', hash, old .. ':failed')
      if last then redis.call('HSET', hash, 'base', last) end
      redis.call('HDEL', hash, old .. ':sent', old .. ':ok', old .. ':failed')
    end
    redis.call('ZREMRANGEBYSCORE', buckets, '-inf', bound)
  end
  if by > 0 then redis.call('HINCRBY', hash, bucket .. ':' .. field, by) end
  redis.call('HSET', hash, bucket .. ':failed', failed)
end

-- A document's attempts, kept in its record's `hist` field: one line an attempt, the
-- newest last, tab-separated fields (records.py, Attempt), at most HISTORY_KEEP.
-- Built with plain finds: pattern matching each field was a fifth of a failure's cost.
local HISTORY_KEEP = 20
local function history_add(past, ...)
  local fields = {...}
  local joined = table.concat(fields)
  if string.find(joined, '\t', 1, true) or string.find(joined, '\n', 1, true) then
    for i = 1, #fields do fields[i] = string.gsub(fields[i], '[\t\n]', ' ') end
  end
  local entry = table.concat(fields, '\t')
  if not past or past == '' then return entry end
  local ends = {}
  local at = string.find(past, '\n', 1, true)
  while at do
    ends[#ends + 1] = at
    at = string.find(past, '\n', at + 1, true)
  end
  -- #ends + 1 lines now, one more with the entry: drop the oldest beyond HISTORY_KEEP
  local drop = #ends + 2 - HISTORY_KEEP
  if drop > 0 then past = string.sub(past, ends[drop] + 1) end
  return past .. '\n' .. entry
end
