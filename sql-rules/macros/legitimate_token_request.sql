-- macro: legitimate_token_request
-- description: A token minted by the cluster for its own use: a kubelet
--    minting a token bound to a pod (the NodeRestriction admission plugin lets
--    it mint nothing else: only for pods bound to its node; when the body is
--    logged the binding is checked here too), or kube-controller-manager
--    minting the tokens its controllers run with, in kube-system.
COALESCE(
  (starts_with(user_info.username, 'system:node:')
   AND (request_object IS NULL
        OR json_get_str(request_object, 'spec', 'boundObjectRef', 'kind') = 'Pod'))
  OR (user_info.username = 'system:kube-controller-manager' AND object_ref.namespace = 'kube-system'),
  FALSE)
