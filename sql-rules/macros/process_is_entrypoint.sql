-- macro: process_is_entrypoint
-- description: The process is its container's entrypoint: PID 1 in the
--    container AND executed when the container started, at most 2 minutes
--    after the container's start time (room for an entrypoint script that
--    sets up, then execs its program); when Tetragon does not know either
--    time, as at a container's very start, PID 1 alone counts. A PID 1
--    executed later is not the entrypoint: an exploited application
--    running as PID 1 that calls execve without forking (os.execv,
--    pcntl_exec, exec in a shell) turns PID 1 into the attacker's shell or
--    tool, and PID 1 alone would hide it.
COALESCE(
  process.pod.container.pid = 1
  AND (process.start_time IS NULL
       OR process.pod.container.start_time IS NULL
       OR process.start_time <= process.pod.container.start_time + INTERVAL '2 minutes'),
  FALSE)
