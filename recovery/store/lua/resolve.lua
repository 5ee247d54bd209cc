-- A tracked task succeeded: count the run and stop tracking the document.
-- KEYS: record due failed claimed waiting dead corrupt imports stats by_category by_worker by_query worker_successes query_successes inflight inflight_tasks breakers deleted series series_buckets replayed_successes
-- ARGV: now doc_id worker query recovery task_id window step keep event probe
-- recovery: '1' when the run was a recovery attempt; task_id: the run that succeeded;
-- window: the circuit-breaker window; query: the name the query is counted under.
-- step, keep: the recoveries-over-time series' bucket width (s) and buckets kept.
-- A run whose document was deleted while it was sent or running (remove.lua) is taken
-- out of flight and counts nothing but the drop ('dropped_after_delete', the first
-- outcome only), and leaves the tracker as it is.
-- A success dated before the document's last failure, by another run, is stale: a
-- report replayed from a spool after another worker recorded a newer failure. The
-- newer failure stands (the document is still to recover); the success counts for
-- its worker only.
-- event: the id of a report replayed from a spool ('' for a live one), kept in
-- replayed_successes by when it was applied: the same report applied again — a replay
-- cut off after Redis applied it keeps it in the spool — is a 'duplicate' and counts
-- nothing (nor takes out of flight a redelivery of its run). It still untracks a
-- record no newer than itself: the failure it resolved, re-applied by the same replay
-- (its event id went with the record), must not bring the document back.
-- probe: '1' when doc_id is a guess (mark_success given 20 hex digits, an id or a
-- path): with nothing stored under it the call changes and counts nothing and says
-- 'absent', so the caller can try the other reading and count the run once.
-- A stats field it counts on (or copies into the series) that is not a number refuses
-- the call before anything changes (stats_refusal).
-- Returns {was tracked (0/1), recovery seconds or ''}, and 'duplicate' or 'absent'
-- third for one.
local rec, id, now = K.record, A.doc_id, clock(A.now)
if A.probe == '1' and redis.call('EXISTS', rec) == 0 then return {0, '', 'absent'} end
local refused = stats_refusal(K.stats, {'resolved', 'successful_recoveries',
  'recovery_time_count', 'failed_recoveries', 'dropped_after_delete'}, {'recovery_time_total'})
if refused then return refused end
local again = A.event ~= '' and redis.call('ZSCORE', K.replayed_successes, A.event)
local dup = again and 'duplicate' or nil
if A.event ~= '' and not again then
  -- by the server's clock: `now` is when the worker saw it, which may be long before
  redis.call('ZADD', K.replayed_successes, num(clock('')), A.event)
end
if not again then leave_flight(K.inflight, K.inflight_tasks, A.task_id) end
if deleted_run(K.deleted, K.stats, A.task_id) then return {0, '', dup} end
if not again then
  agg_incr(K.worker_successes, A.worker)
  agg_incr(K.query_successes, query_of(A.query))
end
if redis.call('EXISTS', rec) == 0 then
  return {0, '', dup}
end
local started, category = nil, nil
if is_hash(rec) then
  local f = redis.call('HMGET', rec, 'rec_at', 'cat', 'last', 'task_id')
  local other = again or (A.task_id ~= '' and f[4] ~= A.task_id)
  if other and (tonumber(f[3]) or now) > now then
    return {0, '', dup}
  end
  started, category = tonumber(f[1]), f[2]
end
untrack({K.due, K.failed, K.claimed, K.waiting, K.dead, K.corrupt, K.imports},
  {K.by_category, K.by_worker, K.by_query}, rec, id)
if again then return {0, '', dup} end
redis.call('HINCRBY', K.stats, 'resolved', 1)
if A.recovery == '1' then
  redis.call('HINCRBY', K.stats, 'successful_recoveries', 1)
  breaker_note(K.breakers, category, '1', tonumber(A.window))
  series_note(K.series, K.series_buckets, K.stats, now, tonumber(A.step), tonumber(A.keep), 'ok', 1)
  if started then
    local took = math.max(0, now - started)
    redis.call('HINCRBYFLOAT', K.stats, 'recovery_time_total', num(took))
    redis.call('HINCRBY', K.stats, 'recovery_time_count', 1)
    return {1, num(took)}
  end
end
return {1, ''}
