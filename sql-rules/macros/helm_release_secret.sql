-- macro: helm_release_secret
-- description: A read of Helm's own release records: a secret named
--    sh.helm.release.v1.*, or a list selecting owner=helm.
COALESCE(
  starts_with(COALESCE(object_ref.name, ''), 'sh.helm.release.v1.')
  OR regexp_like(COALESCE(request_uri, ''), 'labelSelector=[^&]*owner%3Dhelm'),
  FALSE)
