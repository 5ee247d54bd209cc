-- The candidates of a recovery run: due documents eligible under that run's settings,
-- oldest attempt first. Reads only; claim.lua re-checks each one atomically.
-- KEYS: due failed
-- ARGV: now limit delays jitter retention
-- delays: JSON list per lane of the run's backoff in seconds per retry level (see
-- ranges() in _lib.lua); a level past the list (max_retry_count) is not eligible,
-- and not touched. jitter: the run's retry_jitter; each document's share of it is
-- fixed by its id (spread() in _lib.lua), so only the oldest twice `limit` of each
-- range are read, and those still inside their jitter wait for a later run.
-- retention: '' for a run, whose cleanup has just removed every document past it;
-- for a dry run, which cleans nothing, the seconds past which a document (first
-- failed earlier, as the failed index scores it) is left out, as the run would.
-- Returns {now, ids}.
local now, limit, jitter = clock(A.now), tonumber(A.limit), tonumber(A.jitter)
local cutoff = A.retention ~= '' and now - tonumber(A.retention) or nil
local function retained(id)
  return not cutoff or (tonumber(redis.call('ZSCORE', K.failed, id)) or now) >= cutoff
end
local delays = cjson.decode(A.delays)
local found = {}
for _, range in ipairs(ranges(delays, now)) do
  local ids = redis.call('ZRANGEBYSCORE', K.due, range[1], range[2], 'WITHSCORES', 'LIMIT', 0,
    2 * limit)
  for i = 1, #ids, 2 do
    local score = tonumber(ids[i + 1])
    if eligible(delays, jitter, ids[i], score, now) and retained(ids[i]) then
      local _, _, last = split(score)
      found[#found + 1] = {ids[i], last}
    end
  end
end
table.sort(found, function(a, b) return a[2] < b[2] end)
local ids = {}
for i = 1, math.min(limit, #found) do ids[i] = found[i][1] end
return {num(now), ids}
