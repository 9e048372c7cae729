-- id: tetragon.shell_in_container
-- title: Shell started in a container
-- severity: medium
-- description: x
-- mitre: T1059.004
-- source: tetragon
-- author: Vigil
-- based_on: falco:Terminal shell in container
SELECT process.binary AS binary, process.pod.namespace AS namespace, process.pod.container.image.name AS image
FROM tetragon
WHERE event_type = 'process_exec' AND process.pod IS NOT NULL
  AND process.binary IN ('/bin/sh','/bin/bash','/usr/bin/sh','/usr/bin/bash')
