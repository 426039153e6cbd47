"""Execution environments: where a handler runs for one invocation.

- :mod:`~streamfn.runtime.base`: the :class:`~streamfn.runtime.base.Runtime` protocol (the
  one call the invoker makes) and the function logger's name;
- :mod:`~streamfn.runtime.router`: ``open_runtime(config)``, which sends each function to
  the runtime its config names;
- :mod:`~streamfn.runtime.process`: ``runtime = "python"``, isolated worker processes forked
  from a template (pool, fork server, worker loop, msgpack protocol, limits);
- :mod:`~streamfn.runtime.runtime_api`: ``runtime = "provided"``, a ``bootstrap`` executable
  served by a per-environment Lambda Runtime API;
- :mod:`~streamfn.runtime.inline`: ``runtime = "inline"``, in the engine process;
- :mod:`~streamfn.runtime.invocation`: calling a handler and naming how it ended (shared by
  the inline runtime and the worker processes);
- :mod:`~streamfn.runtime.deadlines`: one watchdog task for every invocation's timeout;
- :mod:`~streamfn.runtime.handlers`: importing ``module:attr`` handlers;
- :mod:`~streamfn.runtime.context`: the ``context`` object handlers receive;
- :mod:`~streamfn.runtime.logs`: START / END / REPORT lines and Lambda's error bodies.
"""
