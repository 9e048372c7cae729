-- id: falco.shell_in_container
-- title: Falco detected a shell in a container
-- severity: medium
-- description: Falco reported an interactive or untrusted shell in a container
--    ("Terminal shell in container", "Run shell untrusted", netcat remote code
--    execution, STDIN/STDOUT redirected to a network connection). Alerts are
--    kept when the Falco tags say both "container" and "shell" or T1059 (Command
--    and Scripting Interpreter), or when the rule is one of those named here.
-- mitre: T1059.004, T1609
-- source: falco
-- tags: attack, execution, runtime
-- author: Vigil
-- references: https://attack.mitre.org/techniques/T1059/004/
-- based_on: falco:Terminal shell in container, falco:Run shell untrusted, falco:Redirect STDOUT/STDIN to Network Connection in Container, falco:Netcat Remote Code Execution in Container
SELECT
  rule AS falco_rule,
  priority AS priority,
  hostname AS hostname,
  output AS output,
  falco_k8s_namespace() AS namespace,
  falco_k8s_pod() AS pod,
  falco_image() AS image,
  falco_cmdline() AS cmdline,
  json_get_str(output_fields, 'user.name') AS user_name
FROM falco
WHERE falco_shell_alert()
