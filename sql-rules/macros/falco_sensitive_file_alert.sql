-- macro: falco_sensitive_file_alert
-- description: A Falco alert reports a read of credentials or sensitive
--    files: one of the falco_sensitive_file_rules, or a rule tagged with
--    one of the falco_credential_access_tags (T1555, T1552).
COALESCE(
  in_list(rule, 'falco_sensitive_file_rules')
  OR any_in_list(tags, 'falco_credential_access_tags'),
  FALSE)
