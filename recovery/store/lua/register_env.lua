-- A worker starts: remember its environment fingerprint.
-- KEYS: fingerprints generations
-- ARGV: worker fingerprint
-- fingerprints: worker -> fingerprint; generations: fingerprint -> generation, and
-- 'latest'. A fingerprint never seen before opens a new generation: import failures
-- recorded under an older one may succeed now. Returns {generation, 1 if new else 0}.
local known = tonumber(redis.call('HGET', K.generations, A.fingerprint))
redis.call('HSET', K.fingerprints, A.worker, A.fingerprint)
if known then
  return {known, 0}
end
local generation = redis.call('HINCRBY', K.generations, 'latest', 1)
redis.call('HSET', K.generations, A.fingerprint, generation)
return {generation, 1}
