-- id: hand.0c9b3bda-41a6-4442-9345-356ae86343dc
-- title: Kubernetes CronJob/Job Modification
-- severity: medium
-- description: Detects when a Kubernetes CronJob or Job is created or
--    modified. A Kubernetes Job creates one or more pods to accomplish a
--    specific task, and a CronJob creates Jobs on a recurring schedule. An
--    adversary can take advantage of this Kubernetes object to schedule Jobs
--    to run containers that execute malicious code within a cluster, allowing
--    them to achieve persistence. False positives: Modifying a Kubernetes Job
--    or CronJob may need to be done by a system administrator.; Automated
--    processes may need to take these actions and may need to be filtered.
-- mitre: none
-- source: k8s_audit
-- tags: handwritten, attack.persistence, attack.privilege-escalation, attack.execution
-- author: kelnage
-- references: https://kubernetes.io/docs/reference/config-api/apiserver-audit.v1/, https://www.redhat.com/en/blog/protecting-kubernetes-against-mitre-attck-persistence#technique-33-kubernetes-cronjob
-- based_on: sigma:0c9b3bda-41a6-4442-9345-356ae86343dc
SELECT
  user_info.username AS username,
  verb AS verb,
  object_ref.resource AS resource,
  object_ref.subresource AS subresource,
  object_ref.namespace AS namespace,
  object_ref.name AS name,
  request_uri AS uri,
  source_ips[1] AS source_ip,
  user_agent AS user_agent,
  response_status.code AS code
FROM k8s_audit
WHERE object_ref.api_group = 'batch'
  AND object_ref.resource IN ('cronjobs', 'jobs')
  AND verb IN ('create', 'delete', 'patch', 'replace', 'update')
