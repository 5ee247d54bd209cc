-- Make import failures due now when a newer worker environment has appeared.
-- KEYS[1] imports zset (doc id -> generation failed under)  KEYS[2] due  KEYS[3] generations
-- ARGV[1] now  ARGV[2] most to promote in this call
-- Only documents still waiting in due are moved (not claimed, not dead); each leaves
-- the imports index, and a new import failure puts it back under its generation.
-- Returns the ids promoted.
local latest = tonumber(redis.call('HGET', KEYS[3], 'latest')) or 0
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. latest, 'LIMIT', 0, ARGV[2])
local now = tonumber(ARGV[1])
local promoted = {}
for _, id in ipairs(ids) do
  local score = tonumber(redis.call('ZSCORE', KEYS[2], id))
  if score and score > now then
    redis.call('ZADD', KEYS[2], now, id)
    promoted[#promoted + 1] = id
  end
  redis.call('ZREM', KEYS[1], id)
end
return promoted
