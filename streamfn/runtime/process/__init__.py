"""Isolated execution environments: ``runtime = "python"`` and ``runtime = "provided"``.

Each environment is a process of its own, so a slow, leaking or crashing handler can never
hurt the engine or other functions. The parts, in the order an invocation meets them:

- :mod:`.pool`: the runtime (:func:`open_process_runtime`) — per-function pools of warm
  environments, cold starts, timeouts, reaping, provisioned concurrency;
- :mod:`.deadlines`: the one watchdog task that cuts invocations and inits at their
  deadlines on the clock;
- :mod:`.launch`: starting an environment — its variables, /tmp and descriptors;
- :mod:`.environment`: one environment as the engine sees it (a Python worker; the
  ``provided`` kind is :mod:`streamfn.runtime.runtime_api`);
- :mod:`.output`: the environment's stdout/stderr as function log lines;
- :mod:`.forkserver`: the engine's side of the template process, replaced if it dies;
- :mod:`.template`: the template (fork server) process that forks every environment;
- :mod:`.limits`: memory, /tmp and descriptor limits applied in a new environment;
- :mod:`.worker`: the Python worker's main loop;
- :mod:`.protocol`: the msgpack messages between engine, template and workers.

Processes::

    engine ──control socket──► template ──fork──► worker (python)   ◄──socket pair── engine
                                        └─fork+exec─► bootstrap (provided) ◄──HTTP── engine
              every environment's stdout+stderr ──pipe──► engine (function log)
"""

from streamfn.runtime.process.pool import ProcessRuntime, open_process_runtime

__all__ = ["ProcessRuntime", "open_process_runtime"]
