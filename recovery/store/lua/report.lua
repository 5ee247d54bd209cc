-- Counts for status and analysis under the caller's settings, in O(levels × log N)
-- plus the size of the small aggregate hashes: never a scan of the records, one
-- round trip. Reads only.
-- KEYS: failed due claimed waiting dead corrupt stats inflight breakers
-- ARGV: now delays ages
-- Then the aggregate hashes to return whole (item_key(i)): those the analysis reads,
-- none for a status, which passes only the keys it counts.
-- delays: as select_due.lua reads them; ages: JSON list of age-bucket edges in
-- seconds, ascending, or '' (a status: no age buckets).
-- Returns {tracked, eligible, scheduled, exhausted, in_recovery, waiting, dead, corrupt,
-- {documents per age bucket}, stats (flat), runs in flight, breaker windows
-- (flat), each aggregate hash (flat)}: eligible now, due later, and past this caller's
-- max_retry_count. Counted by the backoff alone: a document inside its jitter (at
-- most retry_jitter of its backoff) counts as eligible a little before a run takes it.
local now = clock(A.now)
local delays = cjson.decode(A.delays)
local eligible, retryable = 0, 0
for _, range in ipairs(ranges(delays, now)) do
  eligible = eligible + redis.call('ZCOUNT', K.due, range[1], range[2])
end
-- the levels of a lane below max_retry_count are contiguous scores: one ZCOUNT a lane
-- counts every document a run with these settings may ever take
for lane, levels in ipairs(delays) do
  if #levels > 0 then
    local low = (lane - 1) * LANE
    local high = string.format('(%d', low + #levels * LEVEL)
    retryable = retryable + redis.call('ZCOUNT', K.due, string.format('%d', low), high)
  end
end
local scheduled = retryable - eligible
-- past the caller's max_retry_count: every due document in no level counted above
local exhausted = redis.call('ZCARD', K.due) - retryable
local ages = {}
if A.ages ~= '' then
  local edges = cjson.decode(A.ages)
  for i = 1, #edges + 1 do
    local newest = i == 1 and '+inf' or '(' .. num(now - edges[i - 1])
    local oldest = i > #edges and '-inf' or num(now - edges[i])
    ages[i] = redis.call('ZCOUNT', K.failed, oldest, newest)
  end
end
local out = {redis.call('ZCARD', K.failed), eligible, scheduled, exhausted,
  redis.call('ZCARD', K.claimed), redis.call('ZCARD', K.waiting), redis.call('ZCARD', K.dead),
  redis.call('ZCARD', K.corrupt), ages, redis.call('HGETALL', K.stats),
  redis.call('ZCARD', K.inflight), redis.call('HGETALL', K.breakers)}
for i = 1, item_keys do
  out[#out + 1] = redis.call('HGETALL', item_key(i))
end
return out
