-- Make import failures due now when a newer worker environment has appeared.
-- KEYS: imports due generations
-- ARGV: now limit
-- imports: doc id -> the generation it failed under; limit: most to promote per call.
-- Only documents still waiting in due are moved (not claimed, not dead); each leaves
-- the imports index, and a new import failure puts it back under its generation.
-- Returns the ids promoted.
local latest = tonumber(redis.call('HGET', K.generations, 'latest')) or 0
local ids = redis.call('ZRANGEBYSCORE', K.imports, '-inf', '(' .. latest, 'LIMIT', 0, A.limit)
local now = tonumber(A.now)
local promoted = {}
for _, id in ipairs(ids) do
  local score = tonumber(redis.call('ZSCORE', K.due, id))
  if score and score > now then
    redis.call('ZADD', K.due, now, id)
    promoted[#promoted + 1] = id
  end
  redis.call('ZREM', K.imports, id)
end
return promoted
