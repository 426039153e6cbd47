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
    ├── DestinationError           a destination record could not be delivered (retriable)
    └── EngineError                a part of the engine failed and stopped it; the message
                                   is a one-line summary, ``__cause__`` the error

A *function* error (the handler raised, timed out, crashed) is never an exception inside the
engine: it is an :class:`~streamfn.types.InvocationResult` whose outcome says so, because
retrying and routing it is ordinary work, not an exceptional path.

Where streamfn calls a dependency (sqlite3, aiokafka, the file system) it translates that
dependency's exceptions into this tree with ``raise ... from exc``.

Reporting. Task groups wrap what fails in them in exception groups; nothing shows a user an
exception group. Where the engine or the CLI reports a failure it takes the group's
:func:`leaves` and :func:`stopped_by` turns them into one error to raise: a StreamfnError
stays itself (its message was written for the user), anything else is logged once with its
traceback and summed up in one line naming its type, message and the file and line it was
raised at (:func:`describe`).
"""

from __future__ import annotations

import functools
import logging
import os
import sysconfig
import traceback
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


class EngineError(StreamfnError):
    """A part of the engine (an event source, a stream mapping, the async dispatcher) failed
    and stopped the engine. The message is a one-line summary naming the part, the cause and
    where it was raised; ``__cause__`` is the error itself, with its traceback."""


def leaves(exc: BaseException) -> list[BaseException]:
    """The exceptions at the leaves of ``exc``'s exception-group tree, depth first; ``[exc]``
    for an exception that is not a group."""
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in leaves(inner)]
    return [exc]


def describe(exc: BaseException) -> str:
    """One line for one exception (not a group): a StreamfnError's message (written for the
    user); anything else as ``Type: message (file:line, in function)`` at the innermost
    frame of its traceback outside the standard library."""
    if isinstance(exc, StreamfnError):
        return str(exc)
    kind = type(exc).__qualname__
    if type(exc).__module__ not in ("builtins", "__main__"):
        kind = f"{type(exc).__module__}.{kind}"
    text = f"{kind}: {exc}" if str(exc) else kind
    frames = traceback.extract_tb(exc.__traceback__)
    # The innermost frame outside the standard library: the code that made the failing call.
    own = [f for f in frames if not _in_stdlib(f.filename)] or frames
    if own:
        frame = own[-1]
        text += f" ({frame.filename}:{frame.lineno}, in {frame.name})"
    return text


@functools.cache
def _stdlib() -> tuple[str, tuple[str, ...]]:
    paths = sysconfig.get_paths()
    packages = tuple(os.path.join(paths[key], "") for key in ("purelib", "platlib"))
    return os.path.join(paths["stdlib"], ""), packages


def _in_stdlib(filename: str) -> bool:
    stdlib, packages = _stdlib()
    return filename.startswith(stdlib) and not filename.startswith(packages)


def summary(exc: BaseException) -> str:
    """One line for ``exc``, a group or not: its first leaf :func:`described <describe>`,
    and how many more there are."""
    found = leaves(exc)
    text = describe(found[0])
    if len(found) > 1:
        text += f" (and {len(found) - 1} more error(s), logged above)"
    return text


def stopped_by(exc: BaseException, log: logging.Logger, what: str | None = None) -> StreamfnError:
    """Log ``exc``, which stopped ``what`` (e.g. ``"event source orders-kafka failed"``; None:
    the engine as a whole), once, and return the one error to raise in its place.

    Each leaf of ``exc`` is logged on its own: a StreamfnError as its message (its traceback
    at DEBUG, shown with ``-v``), anything else, being unexpected, at ERROR with its
    traceback. With ``what`` None and a single leaf that is a StreamfnError, the result is
    that leaf and nothing is logged at ERROR (the caller prints it). Otherwise it is an
    :class:`EngineError` ``"{what}: {summary}"`` (``"stopped by {summary}"``) caused by the
    first leaf."""
    found = leaves(exc)
    passthrough = what is None and len(found) == 1 and isinstance(found[0], StreamfnError)
    prefix = f"{what}: " if what is not None else "stopped by "
    for leaf in found:
        if isinstance(leaf, EngineError):  # reported where it was made
            if not passthrough:
                log.error("%s%s", prefix, leaf)
        elif isinstance(leaf, StreamfnError):
            if not passthrough:
                log.error("%s%s", prefix, leaf)
            log.debug("traceback of: %s", leaf, exc_info=leaf)
        else:
            log.error("%s%s", prefix, describe(leaf), exc_info=leaf)
    if passthrough:
        assert isinstance(found[0], StreamfnError)
        return found[0]
    error = EngineError(prefix + summary(exc))
    error.__cause__ = found[0]
    return error
