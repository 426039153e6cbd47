"""Execution environments: where a handler runs for one invocation.

- :mod:`~streamfn.runtime.base`: the :class:`~streamfn.runtime.base.Runtime` protocol (the
  one call the invoker makes) and the function logger's name;
- :mod:`~streamfn.runtime.policy`: what the runtimes are told (a frozen spec per function
  and the service's limits), built from the config by :mod:`streamfn.policies`;
- :mod:`~streamfn.runtime.router`: ``open_runtime(policy)``, which sends each function to
  the runtime its config names;
- :mod:`~streamfn.runtime.envelope`: the START / END / REPORT envelope of an invocation,
  written once for every runtime;
- :mod:`~streamfn.runtime.process`: ``runtime = "python"``, isolated worker processes forked
  from a template (pool, fork server, worker loop, msgpack protocol, limits);
- :mod:`~streamfn.runtime.runtime_api`: ``runtime = "provided"``, a ``bootstrap`` executable
  served by a per-environment Lambda Runtime API;
- :mod:`~streamfn.runtime.inline`: ``runtime = "inline"``, in the engine process;
- :mod:`~streamfn.runtime.invocation`: calling a handler and naming how it ended (shared by
  the inline runtime and the worker processes);
- :mod:`~streamfn.runtime.deadlines`: one watchdog task for every invocation's timeout;
- :mod:`~streamfn.runtime.handlers`: handler strings as AWS resolves them, and importing them;
- :mod:`~streamfn.runtime.context`: the ``context`` object handlers receive;
- :mod:`~streamfn.runtime.marshaller`: results as JSON, as AWS's Python runtime encodes them;
- :mod:`~streamfn.runtime.lambda_logging`: ``logging`` set up as AWS's Python runtime does;
- :mod:`~streamfn.runtime.tracing`: the X-Ray trace id of each invocation;
- :mod:`~streamfn.runtime.logs`: START / END / REPORT lines (and their JSON-format records)
  and Lambda's error bodies.
"""
