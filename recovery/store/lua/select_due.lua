-- The candidates of a recovery run: due documents eligible under that run's settings,
-- oldest attempt first. Reads only; claim.lua re-checks each one atomically.
-- KEYS: due
-- ARGV: now limit delays
-- delays: JSON list per lane of the run's backoff in seconds per retry level (see
-- ranges() in _lib.lua); a level past the list (max_retry_count) is not eligible,
-- and not touched.
-- Returns {now, ids}.
local now, limit = clock(A.now), tonumber(A.limit)
local found = {}
for _, range in ipairs(ranges(cjson.decode(A.delays), now)) do
  local ids = redis.call('ZRANGEBYSCORE', K.due, range[1], range[2], 'WITHSCORES', 'LIMIT', 0, limit)
  for i = 1, #ids, 2 do
    local _, _, last = split(tonumber(ids[i + 1]))
    found[#found + 1] = {ids[i], last}
  end
end
table.sort(found, function(a, b) return a[2] < b[2] end)
local ids = {}
for i = 1, math.min(limit, #found) do ids[i] = found[i][1] end
return {num(now), ids}
