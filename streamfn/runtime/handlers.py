"""Importing handlers the way AWS's Python runtime does, several per process.

Handler strings (:func:`parse_handler`), as ``awslambdaric`` resolves them: the *last* dot
separates the module from the function (``lambda_function.lambda_handler``,
``pkg.sub.mod.fn``), slashes in the module are package separators (``pkg/sub/mod.fn``
imports ``pkg.sub.mod``), and streamfn's own ``module:function`` form is kept.

On AWS every function has its own interpreter with its code directory (``LAMBDA_TASK_ROOT``)
first on ``sys.path``. The inline runtime imports every function into the engine's one
interpreter, where ``sys.modules`` is shared, and the usual Lambda layout puts a
``lambda_function.py`` into each function's directory. :class:`HandlerLoader` keeps such
functions apart:

- a module belongs to a code directory when its top-level package lives directly in it
  (``DIR/name.py``, ``DIR/name/``); packages installed below it (``DIR/.venv/...``) do not;
- before it imports a function, the loader hides from ``sys.modules`` the modules it
  imported earlier from *other* code directories, and a module already imported from
  elsewhere under the handler's top-level name when the code directory has its own;
- after the import it puts the hidden modules back. A module of the new directory whose
  name was taken stays private: the handler's globals hold it, ``sys.modules`` does not;
- the code directory stays on ``sys.path`` while the loader is open, so imports a handler
  makes later still work; :meth:`HandlerLoader.close` removes the directories and the
  modules it put into ``sys.modules``, so opening again imports afresh.

Limitation (in-process only): an import made *while handling* an event resolves through the
shared ``sys.modules`` and ``sys.path``, so a module name present in two code directories
gives the first one loaded. The isolated worker-process runtime has no such sharing.

Errors are :class:`~streamfn.errors.HandlerImportError` with the type AWS reports:
``Runtime.MalformedHandlerName``, ``Runtime.BuiltInModuleConflict`` (a handler module named
like a module built into the interpreter, ``sys.handler``), ``Runtime.ImportModuleError``
(module or one of its imports missing), ``Runtime.UserCodeSyntaxError``,
``Runtime.HandlerNotFound`` (attribute missing or not callable), and for any other
exception raised by the module's code its class name (``KeyError``...), as AWS's runtime
interface client reports it.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from streamfn.errors import HandlerImportError

Handler = Callable[..., Any]

HANDLER_FORMS = (
    "'module.function' (AWS's form, e.g. 'lambda_function.lambda_handler'), "
    "'package.module.function', 'package/module.function' or 'module:function'"
)
"""The accepted handler strings, in words, for error messages."""


def parse_handler(value: str) -> tuple[str, str]:
    """``(module to import, attribute)`` of a ``python``/``inline`` handler string.

    Pure; the config's validation and the runtimes call it. Raises ValueError naming the
    accepted forms (:data:`HANDLER_FORMS`) when ``value`` is none of them. Module parts are
    Python identifiers (a ``-`` is allowed, as in a file ``my-handler.py``), the attribute
    an identifier.
    """
    module, attr = _split(value)
    parts = module.replace("/", ".").split(".")
    if not all(part.replace("-", "_").isidentifier() for part in parts) or not (
        attr.isidentifier()
    ):
        raise ValueError(_malformed(value))
    return ".".join(parts), attr


def _split(value: str) -> tuple[str, str]:
    if ":" in value:
        module, _, attr = value.partition(":")
    else:
        module, _, attr = value.rpartition(".")
    if not module or not attr:
        raise ValueError(_malformed(value))
    return module, attr


def _malformed(value: str) -> str:
    shown = value if len(value) <= 80 else value[:77] + "..."
    return f"bad handler {shown!r}: expected {HANDLER_FORMS}"


class HandlerLoader:
    """Imports the handlers of several functions; see the module docstring. Not thread-safe:
    load everything at startup, before the first invocation."""

    def __init__(self) -> None:
        self._public: dict[str, tuple[ModuleType, Path]] = {}  # ours, in sys.modules
        self._private: dict[str, tuple[ModuleType, Path]] = {}  # ours, kept out of it
        self._paths: list[str] = []  # entries this loader added to sys.path

    def load(self, handler: str, code_dir: Path) -> Handler:
        """Import ``handler`` (any form of :func:`parse_handler`) from ``code_dir``."""
        try:
            module_name, attr = parse_handler(handler)
        except ValueError as exc:
            raise HandlerImportError(handler, "Runtime.MalformedHandlerName", str(exc)) from None
        if module_name.partition(".")[0] in sys.builtin_module_names:
            raise HandlerImportError(
                handler,
                "Runtime.BuiltInModuleConflict",
                f"Cannot use built-in module {module_name} as a handler module",
            )
        code_dir = code_dir.resolve()
        module = self._import(handler, module_name, code_dir)
        try:
            function = getattr(module, attr)
        except AttributeError:
            raise HandlerImportError(
                handler,
                "Runtime.HandlerNotFound",
                f"Handler '{attr}' missing on module '{module_name}'",
            ) from None
        if not callable(function):
            raise HandlerImportError(
                handler,
                "Runtime.HandlerNotFound",
                f"Handler '{attr}' on module '{module_name}' is not callable",
            )
        return function  # type: ignore[no-any-return]

    def close(self) -> None:
        """Forget every module this loader put into ``sys.modules``; restore ``sys.path``."""
        for name, (module, _) in self._public.items():
            if sys.modules.get(name) is module:
                del sys.modules[name]
        for entry in self._paths:
            if entry in sys.path:
                sys.path.remove(entry)
        self._public.clear()
        self._private.clear()
        self._paths.clear()

    def _import(self, handler: str, module_name: str, code_dir: Path) -> ModuleType:
        importlib.invalidate_caches()  # code written just before (tests, deploys)
        top = module_name.partition(".")[0]
        hidden = {
            name: module
            for name, (module, origin) in self._public.items()
            if origin != code_dir and sys.modules.get(name) is module
        }
        shadow = sys.modules.get(top)
        if (
            shadow is not None
            and not _belongs(top, shadow, code_dir)
            and importlib.machinery.PathFinder.find_spec(top, [str(code_dir)]) is not None
        ):
            for name, module in list(sys.modules.items()):
                if name == top or name.startswith(top + "."):
                    hidden[name] = module
        for name in hidden:
            del sys.modules[name]
        before = set(sys.modules)
        entry = str(code_dir)
        if entry in sys.path:
            sys.path.remove(entry)
        else:
            self._paths.append(entry)
        sys.path.insert(0, entry)
        try:
            return importlib.import_module(module_name)
        except ImportError as exc:  # ModuleNotFoundError too: "No module named 'x'"
            raise HandlerImportError(
                handler,
                "Runtime.ImportModuleError",
                f"Unable to import module '{module_name}': {exc}",
            ) from exc
        except SyntaxError as exc:
            raise HandlerImportError(
                handler,
                "Runtime.UserCodeSyntaxError",
                f"Syntax error in module '{module_name}': {exc}",
            ) from exc
        except SystemExit as exc:
            raise HandlerImportError(
                handler, "Runtime.ExitError", f"module '{module_name}' called exit({exc.code})"
            ) from exc
        except Exception as exc:
            raise HandlerImportError(handler, type(exc).__name__, str(exc)) from exc
        finally:
            self._settle(code_dir, before, hidden)

    def _settle(self, code_dir: Path, before: set[str], hidden: dict[str, ModuleType]) -> None:
        for name in set(sys.modules) - before:
            module = sys.modules[name]
            if not _belongs(name.partition(".")[0], module, code_dir):
                continue  # stdlib or an installed package imported for the first time
            if name in hidden:
                self._private[name] = (module, code_dir)
                del sys.modules[name]
            else:
                self._public[name] = (module, code_dir)
        sys.modules.update(hidden)


def load_handler(handler: str, code_dir: Path) -> Handler:
    """Import one handler and leave it imported, as AWS's runtime does in its own process."""
    return HandlerLoader().load(handler, code_dir)


def _belongs(top: str, module: ModuleType, code_dir: Path) -> bool:
    """Whether ``module`` was found in ``code_dir`` (its top-level package lives there)."""
    spec = getattr(module, "__spec__", None)
    if spec is None:
        return False
    places = list(spec.submodule_search_locations or ())
    if spec.origin and spec.has_location:
        places.append(spec.origin)
    for place in places:
        try:
            first = Path(place).resolve().relative_to(code_dir).parts[0]
        except (ValueError, IndexError):
            continue
        if first == top or first.startswith(top + "."):
            return True
    return False


def init_message(exc: HandlerImportError) -> str:
    """The error message of ``exc`` as Lambda reports it (without the handler prefix)."""
    return str(exc).split(f"{exc.error_type}: ", 1)[-1]


def log_init_error(function: str, handler: str, error_type: str, message: str) -> None:
    """Log once, at startup, that ``function``'s handler cannot be imported and the service
    runs on without it (``streamfn run`` without ``--strict``)."""
    logging.getLogger("streamfn.runtime").error(
        "function %r: handler %r cannot be imported (%s: %s); its invocations fail with this error",
        function,
        handler,
        error_type,
        message,
    )
