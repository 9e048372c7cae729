-- id: tetragon.crypto_miner
-- title: Cryptocurrency miner executed
-- severity: high
-- description: A process was executed whose binary is a well-known miner
--    (xmrig, xmr-stak, minerd, cpuminer, t-rex, nbminer, lolminer, ethminer,
--    phoenixminer, kdevtmpfsi, kinsing) or whose command line points at a mining
--    pool (stratum+tcp://, stratum+ssl://, --donate-level). Cryptojacking is the
--    most common payload of exposed Kubernetes clusters.
-- mitre: T1496
-- source: tetragon
-- tags: attack, impact, runtime
-- author: Vigil
-- references: https://attack.mitre.org/techniques/T1496/
-- based_on: mitre:T1496, vigil:crypto_miner
SELECT
  node_name AS node,
  process.pod.namespace AS namespace,
  process.pod.name AS pod,
  process.pod.container.image.name AS image,
  process.binary AS binary,
  process.arguments AS arguments,
  parent.binary AS parent_binary
FROM tetragon
WHERE event_type = 'process_exec'
  AND (in_list(lower(process_basename(process.binary)), 'crypto_miner_binaries')
       OR regexp_like(lower(COALESCE(process.arguments, '')), '(stratum\+(tcp|ssl|tls)://|--donate-level|--coin[= ]+(monero|xmr))'))
