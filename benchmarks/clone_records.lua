-- Benchmark loader: write record hashes from a template, as record_failure left one.
-- KEYS: the record hashes to write, one per document.
-- ARGV[1] TTL seconds  ARGV[2] n, the length of the template's field/value list
-- ARGV[3 .. 2+n] the template  ARGV[3+n] comma-separated positions in the template
-- whose values differ per document, then those values, document after document.
-- Returns the number of hashes written. Indexes and aggregates are written by the
-- caller (ZADD and HINCRBY per batch); benchmarks/run.py checks the result against
-- record_failure itself before every use.
local ttl, n = ARGV[1], tonumber(ARGV[2])
local fields = {}
for i = 1, n do fields[i] = ARGV[2 + i] end
local slots = {}
for pos in string.gmatch(ARGV[3 + n], '%d+') do slots[#slots + 1] = tonumber(pos) end
local at = 4 + n
for _, key in ipairs(KEYS) do
  for _, pos in ipairs(slots) do
    fields[pos] = ARGV[at]
    at = at + 1
  end
  redis.call('HSET', key, unpack(fields))
  redis.call('EXPIRE', key, ttl)
end
return #KEYS
