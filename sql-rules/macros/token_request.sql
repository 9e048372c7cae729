-- macro: token_request
-- description: A TokenRequest that succeeded: a token minted for a service
--    account (serviceaccounts/token create; kubectl create token).
COALESCE(
  object_ref.resource = 'serviceaccounts'
  AND object_ref.subresource = 'token'
  AND verb = 'create'
  AND request_succeeded(),
  FALSE)
