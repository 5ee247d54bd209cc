-- A tracked run ended without success or failure (Celery retry, Ignore, Reject, or a
-- revoke): it is no longer in flight, so no sweep may report it as lost.
-- KEYS[1] inflight zset  KEYS[2] inflight-tasks hash
-- ARGV[1] task id. Returns 1 if it was in flight.
redis.call('HDEL', KEYS[2], ARGV[1])
return redis.call('ZREM', KEYS[1], ARGV[1])
