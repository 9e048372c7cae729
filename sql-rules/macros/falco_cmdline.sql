-- macro: falco_cmdline
-- description: The command line of the process a Falco alert is about
--    (output field proc.cmdline).
json_get_str(output_fields, 'proc.cmdline')
