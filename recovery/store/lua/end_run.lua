-- A tracked run ended without success or failure (Celery retry, Ignore, Reject, or a
-- revoke): it is no longer in flight, so no sweep may report it as lost.
-- KEYS: inflight inflight_tasks
-- ARGV: task_id
-- Returns 1 if it was in flight.
redis.call('HDEL', K.inflight_tasks, A.task_id)
return redis.call('ZREM', K.inflight, A.task_id)
