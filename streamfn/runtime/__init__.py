"""Execution environments: where a handler runs for one invocation.

- :mod:`~streamfn.runtime.base`: the :class:`~streamfn.runtime.base.Runtime` protocol (the
  one call the invoker makes) and the function logger's name;
- :mod:`~streamfn.runtime.inline`: the in-process runtime;
- :mod:`~streamfn.runtime.handlers`: importing ``module:attr`` handlers at startup;
- :mod:`~streamfn.runtime.context`: the ``context`` object handlers receive;
- :mod:`~streamfn.runtime.logs`: START / END / REPORT lines and Lambda's error bodies.
"""
