-- macro: secret_read
-- description: A read of secrets (get, list, watch) counted once per request
--    (its final record), that is not Helm reading its own release records.
COALESCE(
  object_ref.resource = 'secrets'
  AND verb IN ('get', 'list', 'watch')
  AND final_record()
  AND NOT helm_release_secret(),
  FALSE)
