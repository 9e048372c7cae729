-- macro: request_succeeded
-- description: The API server did not refuse or fail the request (a code
--    below 400, or none recorded), and this is not the RequestReceived record
--    that precedes the outcome.
COALESCE(
  COALESCE(stage, '') <> 'RequestReceived'
  AND COALESCE(response_status.code, 200) < 400,
  FALSE)
