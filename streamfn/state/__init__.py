"""Durable state: the async queue, idempotency records and event-source checkpoints.

:mod:`streamfn.state.base` holds the :class:`~streamfn.state.base.StateStore` protocol and
its semantics; :mod:`streamfn.state.sqlite` is the default single-process backend
(``open_sqlite_store``). Importing this package imports no backend.
"""
