-- macro: tetragon_destination_is_loopback
-- description: The connection stays on the host: its destination is in
--    loopback_networks (127.0.0.0/8, ::1, 0.0.0.0, ::; IPv4-mapped forms
--    too) or is "localhost". False when the destination is unknown, so
--    that NOT tetragon_destination_is_loopback() keeps such a connection.
COALESCE(
  cidr_contains(list('loopback_networks'), tetragon_destination_ip())
  OR tetragon_destination_ip() = 'localhost',
  FALSE)
