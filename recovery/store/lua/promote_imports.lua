-- Make import failures eligible now when a newer worker environment has appeared.
-- KEYS: imports due generations
-- ARGV: limit
-- imports: doc id -> the generation it failed under; limit: most to promote per call.
-- Only documents still in due are moved (not claimed, not dead): their last attempt
-- counts as long ago, so any backoff has passed; their retry level stays. Each leaves
-- the imports index, and a new import failure puts it back under its generation.
-- Returns the ids promoted.
local latest = tonumber(redis.call('HGET', K.generations, 'latest')) or 0
local ids = redis.call('ZRANGEBYSCORE', K.imports, '-inf', '(' .. latest, 'LIMIT', 0, A.limit)
local promoted = {}
for _, id in ipairs(ids) do
  local score = tonumber(redis.call('ZSCORE', K.due, id))
  if score then
    local lane, level = split(score)
    redis.call('ZADD', K.due, num(lane * LANE + level * LEVEL), id)
    promoted[#promoted + 1] = id
  end
  redis.call('ZREM', K.imports, id)
end
return promoted
