-- id: falco.critical_alert
-- title: Falco alert of critical priority or higher
-- severity: critical
-- description: Falco raised an alert with priority Critical, Alert or Emergency
--    (for example "Detect release_agent File Container Escapes", "Drop and
--    execute new binary in container", "Fileless execution via memfd_create").
--    Falco reserves these priorities for confirmed attack behaviour, so every one
--    is forwarded as a critical Vigil alert with the Falco rule name and output.
-- mitre: T1611, T1059
-- source: falco
-- tags: attack, runtime
-- author: Vigil
-- references: https://falco.org/docs/concepts/rules/basic-elements/#priority
-- based_on: falco:Detect release_agent File Container Escapes, falco:Drop and execute new binary in container, falco:Fileless execution via memfd_create
SELECT
  rule AS falco_rule,
  priority AS priority,
  hostname AS hostname,
  output AS output,
  tags AS tags,
  falco_k8s_namespace() AS namespace,
  falco_k8s_pod() AS pod,
  falco_image() AS image,
  falco_cmdline() AS cmdline
FROM falco
WHERE lower(COALESCE(priority, '')) IN ('critical', 'alert', 'emergency')
