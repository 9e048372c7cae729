-- id: falco.container_escape
-- title: Falco detected a container escape attempt
-- severity: high
-- description: Falco raised an alert tagged with the MITRE technique T1611
--    (Escape to Host) or one of Falco's own escape rules: release_agent cgroup
--    abuse, debugfs or mount in a privileged container, namespace change
--    (setns / nsenter), host PID 1 access. Any priority; critical ones are also
--    reported by falco.critical_alert.
-- mitre: T1611
-- source: falco
-- tags: attack, privilege_escalation, container_escape, runtime
-- author: Vigil
-- references: https://attack.mitre.org/techniques/T1611/
-- based_on: falco:Detect release_agent File Container Escapes, falco:Debugfs Launched in Privileged Container, mitre:T1611
SELECT
  rule AS falco_rule,
  priority AS priority,
  hostname AS hostname,
  output AS output,
  json_get_str(output_fields, 'k8s.ns.name') AS namespace,
  json_get_str(output_fields, 'k8s.pod.name') AS pod,
  json_get_str(output_fields, 'container.image.repository') AS image,
  json_get_str(output_fields, 'proc.cmdline') AS cmdline
FROM falco
WHERE array_has(tags, 'T1611')
   OR rule IN ('Detect release_agent File Container Escapes', 'Debugfs Launched in Privileged Container',
               'Change thread namespace', 'Mount Launched in Privileged Container')
   OR regexp_like(lower(COALESCE(rule, '')), 'container (escape|breakout)')
