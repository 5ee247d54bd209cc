-- Counts for status and analysis under the caller's settings, in O(levels × log N)
-- plus the size of the small aggregate hashes: never a scan of the records, one
-- round trip. Reads only.
-- KEYS: failed due claimed waiting dead corrupt stats inflight breakers by_category by_worker worker_failures worker_successes by_query query_failures query_successes signatures signature_info signature_last
-- ARGV: now delays ages detail
-- delays: as select_due.lua reads them; ages: JSON list of age-bucket edges in
-- seconds, ascending; detail: '1' adds the aggregate hashes (the analysis).
-- Returns {now, tracked, eligible, scheduled, exhausted, in_recovery, waiting, dead,
-- corrupt, {documents per age bucket}, stats (flat), runs in flight, breaker windows
-- (flat), aggregates (flat) when detail}:
-- eligible now, due later, and past this caller's max_retry_count. Counted by the
-- backoff alone: a document inside its jitter (at most retry_jitter of its backoff)
-- counts as eligible a little before a run takes it.
local now = clock(A.now)
local eligible, scheduled = 0, 0
for _, range in ipairs(ranges(cjson.decode(A.delays), now)) do
  eligible = eligible + redis.call('ZCOUNT', K.due, range[1], range[2])
  scheduled = scheduled + redis.call('ZCOUNT', K.due, '(' .. range[2], '(' .. range[3])
end
-- past the caller's max_retry_count: every due document not in a range above
local exhausted = redis.call('ZCARD', K.due) - eligible - scheduled
local ages = {}
local edges = cjson.decode(A.ages)
for i = 1, #edges + 1 do
  local newest = i == 1 and '+inf' or '(' .. num(now - edges[i - 1])
  local oldest = i > #edges and '-inf' or num(now - edges[i])
  ages[i] = redis.call('ZCOUNT', K.failed, oldest, newest)
end
local out = {num(now), redis.call('ZCARD', K.failed), eligible, scheduled, exhausted,
  redis.call('ZCARD', K.claimed), redis.call('ZCARD', K.waiting), redis.call('ZCARD', K.dead),
  redis.call('ZCARD', K.corrupt), ages, redis.call('HGETALL', K.stats),
  redis.call('ZCARD', K.inflight), redis.call('HGETALL', K.breakers)}
if A.detail == '1' then
  for _, key in ipairs({K.by_category, K.by_worker, K.worker_failures, K.worker_successes,
      K.by_query, K.query_failures, K.query_successes, K.signatures, K.signature_info,
      K.signature_last}) do
    out[#out + 1] = redis.call('HGETALL', key)
  end
end
return out
