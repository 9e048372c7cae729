-- id: k8s.cronjob_created_or_modified
-- title: CronJob created or modified
-- severity: low
-- description: A CronJob was created, updated or patched. Scheduled jobs are a
--    simple way to keep code running in the cluster (re-launching a miner or a
--    reverse shell) after the original foothold is gone. Reported whoever makes
--    the request, system accounts included (the CronJob controller creates Jobs,
--    never CronJobs), except a managed platform's labelled add-ons
--    (platform_managed_write); failed requests are ignored.
-- mitre: T1053.007
-- source: k8s_audit
-- tags: attack, persistence, execution
-- author: Vigil
-- references: https://kubernetes.io/docs/concepts/workloads/controllers/cron-jobs/
-- based_on: panther:Kubernetes.CronJob.CreatedOrModified, sigma:kubernetes_audit_cronjob_modification
SELECT
  user_info.username AS username,
  verb AS verb,
  object_ref.namespace AS namespace,
  object_name() AS cronjob,
  json_get_str(request_object, 'spec', 'schedule') AS schedule,
  pod_spec.images AS images,
  source_ips[1] AS source_ip
FROM k8s_audit
WHERE object_ref.resource = 'cronjobs'
  AND COALESCE(object_ref.subresource, '') = ''
  AND verb IN ('create', 'update', 'patch')
  AND request_succeeded()
  AND NOT platform_managed_write()
