-- A worker starts: remember its environment fingerprint.
-- KEYS[1] fingerprints hash (worker -> fingerprint)  KEYS[2] generations hash
-- (fingerprint -> generation, and 'latest')
-- ARGV[1] worker  ARGV[2] fingerprint
-- A fingerprint never seen before opens a new generation: import failures recorded
-- under an older one may succeed now. Returns {generation, 1 if new else 0}.
local known = tonumber(redis.call('HGET', KEYS[2], ARGV[2]))
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
if known then
  return {known, 0}
end
local generation = redis.call('HINCRBY', KEYS[2], 'latest', 1)
redis.call('HSET', KEYS[2], ARGV[2], generation)
return {generation, 1}
