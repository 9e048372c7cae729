-- macro: final_record
-- description: The audit record that carries the request's outcome, counted
--    once per request: not RequestReceived, and not the ResponseStarted
--    record a watch or a long-running request logs before it completes.
COALESCE(
  COALESCE(stage, '') NOT IN ('RequestReceived', 'ResponseStarted'),
  FALSE)
