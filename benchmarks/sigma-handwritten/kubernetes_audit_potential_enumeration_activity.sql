-- id: hand.597a7e84-187d-458b-9e4f-2f5a0e676711
-- title: Kubernetes Potential Enumeration Activity
-- severity: medium
-- description: Detects potential Kubernetes enumeration or attack activity
--    via the audit log. This includes the execution of common shells,
--    utilities, or specialized tools like 'Rakkess' (access_matrix) and
--    'TruffleHog' via Kubernetes API requests. Attackers use these methods to
--    perform reconnaissance (enumeration), secret harvesting, or execute code
--    (exec) within a cluster. False positives: Authorized administrative
--    maintenance via kubectl; Automated internal infrastructure monitoring
--    and certificate rotation; Security-approved vulnerability or secret
--    scanning in DevSecOps pipelines.
-- mitre: T1609, T1613
-- source: k8s_audit
-- tags: handwritten, attack.execution, attack.discovery
-- author: uniqu3-us3r
-- references: https://www.nccgroup.com/research/detection-engineering-for-kubernetes-clusters/, https://github.com/trufflesecurity/trufflehog, https://github.com/corneliusweig/rakkess
-- based_on: sigma:597a7e84-187d-458b-9e4f-2f5a0e676711
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
WHERE CAST(response_status.code AS VARCHAR) = 'ALLOW'
  AND ((request_uri ILIKE '%\%2fbin\%2fash%' OR request_uri ILIKE '%\%2fbin\%2fbash%' OR request_uri ILIKE '%\%2fbin\%2fbusybox%' OR request_uri ILIKE '%\%2fbin\%2fdash%' OR request_uri ILIKE '%\%2fbin\%2fsh%' OR request_uri ILIKE '%\%2fbin\%2fzsh%' OR request_uri ILIKE '%/bin/ash%' OR request_uri ILIKE '%/bin/bash%' OR request_uri ILIKE '%/bin/busybox%' OR request_uri ILIKE '%/bin/dash%' OR request_uri ILIKE '%/bin/sh%' OR request_uri ILIKE '%/bin/zsh%' OR request_uri ILIKE '%\%2fusr\%2fbin\%2fcurl%' OR request_uri ILIKE '%\%2fusr\%2fbin\%2fkubectl%' OR request_uri ILIKE '%\%2fusr\%2fbin\%2fperl%' OR request_uri ILIKE '%\%2fusr\%2fbin\%2fpython%' OR request_uri ILIKE '%\%2fusr\%2fbin\%2fwget%' OR request_uri ILIKE '%/usr/bin/curl%' OR request_uri ILIKE '%/usr/bin/kubectl%' OR request_uri ILIKE '%/usr/bin/perl%' OR request_uri ILIKE '%/usr/bin/python%' OR request_uri ILIKE '%/usr/bin/wget%')
    OR (user_agent ILIKE '%access\_matrix%' OR user_agent ILIKE '%trufflehog%' OR user_agent ILIKE '%azurehound%' OR user_agent ILIKE '%micro-scanner%'))
