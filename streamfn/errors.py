"""The one exception tree of streamfn.

::

    StreamfnError                  base; ``retriable``: may trying again help?
    ├── ConfigError                streamfn.toml is wrong (names file, field path, allowed)
    ├── PluginError                a connector plugin is missing, broken or registered twice
    ├── HandlerImportError         a handler string cannot be imported (at startup)
    ├── InvalidPatternError        a filter pattern is malformed (also a ValueError)
    ├── InvalidDestinationError    a destination URI cannot be parsed (also a ValueError)
    ├── InvalidScheduleError       a schedule expression is malformed (also a ValueError)
    ├── StateError                 the state store failed
    │   └── RetriableStateError    ... because it is busy or briefly unreachable (retriable)
    ├── SourceError                a connector's I/O failed (retriable)
    └── DestinationError           a destination record could not be delivered (retriable)

A *function* error (the handler raised, timed out, crashed) is never an exception inside the
engine: it is an :class:`~streamfn.types.InvocationResult` whose outcome says so, because
retrying and routing it is ordinary work, not an exceptional path.

Where streamfn calls a dependency (sqlite3, aiokafka, the file system) it translates that
dependency's exceptions into this tree with ``raise ... from exc``.
"""

from __future__ import annotations

from typing import ClassVar


class StreamfnError(Exception):
    """Base of every error streamfn raises on purpose."""

    retriable: ClassVar[bool] = False


class ConfigError(StreamfnError):
    """The configuration is invalid. The message names the file, the field path and what is
    allowed, e.g. ``streamfn.toml: functions.orders.timeout: must be <= 900 (got 1000)``."""

    def __init__(self, message: str, *, file: str | None = None, path: str | None = None) -> None:
        self.file = file
        self.path = path
        where = ": ".join(part for part in (file, path) if part)
        super().__init__(f"{where}: {message}" if where else message)


class PluginError(StreamfnError):
    """A connector plugin is missing, failed to import, or its name is taken twice."""


class HandlerImportError(StreamfnError):
    """A handler string ("module:attr") cannot be imported. ``error_type`` is Lambda's name
    for the failure (Runtime.ImportModuleError, Runtime.HandlerNotFound, ...)."""

    def __init__(self, handler: str, error_type: str, message: str) -> None:
        self.handler = handler
        self.error_type = error_type
        super().__init__(f"handler {handler!r}: {error_type}: {message}")


class InvalidPatternError(StreamfnError, ValueError):
    """An EventBridge-style filter pattern is malformed; the message says what and where."""


class InvalidDestinationError(StreamfnError, ValueError):
    """A destination URI (dir:PATH, function:NAME, kafka://TOPIC, ...) cannot be parsed."""


class InvalidScheduleError(StreamfnError, ValueError):
    """A schedule expression (``rate(...)``, ``cron(...)``, ``at(...)``, crontab) is malformed."""


class StateError(StreamfnError):
    """The state store failed to read or write."""


class RetriableStateError(StateError):
    """The state store is busy or briefly unreachable; the same call may succeed later."""

    retriable: ClassVar[bool] = True


class SourceError(StreamfnError):
    """A connector's I/O failed (broker unreachable, directory vanished, ...)."""

    retriable: ClassVar[bool] = True


class DestinationError(StreamfnError):
    """A destination record could not be delivered; it is retried, never dropped silently."""

    retriable: ClassVar[bool] = True
