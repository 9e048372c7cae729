-- macro: falco_shell_alert
-- description: A Falco alert reports a shell in a container: one of the
--    falco_shell_rules (Terminal shell in container, Run shell untrusted,
--    netcat or STDIN/STDOUT redirected to a network connection), or any
--    rule tagged container and one of the falco_shell_tags (shell, T1059,
--    T1059.004).
COALESCE(
  in_list(rule, 'falco_shell_rules')
  OR (array_has(tags, 'container') AND any_in_list(tags, 'falco_shell_tags')),
  FALSE)
