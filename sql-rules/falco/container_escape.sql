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
  falco_k8s_namespace() AS namespace,
  falco_k8s_pod() AS pod,
  falco_image() AS image,
  falco_cmdline() AS cmdline
FROM falco
WHERE array_has(tags, 'T1611')
   OR in_list(rule, 'falco_container_escape_rules')
   OR regexp_like(lower(COALESCE(rule, '')), 'container (escape|breakout)')
