-- macro: capability_names
-- description: Linux capability names as the dangerous_capabilities list
--    holds them: upper case, without the optional CAP_ prefix.
-- params: caps
string_to_array(regexp_replace(upper(array_to_string(caps, ',')), '(^|,)CAP_', '$1', 'g'), ',')
