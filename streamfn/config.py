"""``streamfn.toml``, decoded into frozen Structs.

The file has three parts, named as AWS names them in snake_case (durations in seconds)::

    [service]               the engine: state_dir, max_concurrency, drain_timeout
    [functions.NAME]        a function: handler, code, timeout, memory_size, environment, ...
    [functions.NAME.async]  its "event invoke config": retries, maximum event age, destinations
    [[event_sources]]       an "event-source mapping": function, type = connector name, and
                            the connector's own fields (its Struct subclasses SourceConfig)

Decoding happens in two steps so that each error names the file, the field path and what
is allowed: the engine's own tables first, then each event source with the Struct of the
connector its ``type`` names. Cross-field checks (a source naming an undefined function, a
destination naming one) come last. The first error wins and is raised as one ConfigError.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import msgspec
from msgspec import Meta

from streamfn.errors import ConfigError, InvalidDestinationError, InvalidPatternError
from streamfn.runtime.handlers import parse_handler
from streamfn.runtime.policy import (
    RESERVED_VARIABLES,
    ApplicationLogLevel,
    LogFormat,
    SystemLogLevel,
)

FunctionName = Annotated[str, Meta(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
Handler = Annotated[str, Meta(min_length=1, max_length=128)]
EnvName = Annotated[str, Meta(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]


_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_SCHEME = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://")
_SHOWN = 60
"""Longest repr of a value echoed in an error; longer ones are cut."""
_MESSAGE = 300
"""Longest message of one error; longer ones are cut."""


def shown(value: object) -> str:
    """``repr(value)`` cut to a readable length, for echoing a value in an error."""
    text = repr(value)
    return text if len(text) <= _SHOWN else text[: _SHOWN - 3] + "..."


def check_path(field: str, value: str | None) -> None:
    """For a Struct's ``__post_init__``: raise ``ValueError("`field`: ...")`` when the path
    ``value`` contains a NUL byte (every OS call refuses one)."""
    if value is not None and "\0" in value:
        raise ValueError(f"`{field}`: a path may not contain a NUL byte (got {shown(value)})")


class _Base(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    pass


class ServiceConfig(_Base, frozen=True):
    state_dir: str = ".streamfn"
    """Where the state store lives (queue, idempotency records, checkpoints): a directory
    for SQLite, relative to the config file, or a ``postgresql://`` URL shared by a fleet."""
    max_concurrency: Annotated[int, Meta(ge=1, le=10_000)] = 64
    """Invocations running at once across all functions."""
    drain_timeout: Annotated[float, Meta(ge=0, le=900)] = 30.0
    """On SIGINT/SIGTERM: how long in-flight invocations may take to finish."""
    region: Annotated[str, Meta(pattern=r"^[a-z0-9-]{1,32}$")] = "local"
    account: Annotated[str, Meta(pattern=r"^\d{12}$")] = "000000000000"

    def __post_init__(self) -> None:
        if not self.state_dir.strip():
            raise ValueError("`state_dir`: must not be empty; a directory or a postgresql:// URL")
        scheme = _SCHEME.match(self.state_dir)
        if scheme and scheme["scheme"] not in ("postgresql", "postgres"):
            raise ValueError(
                f"`state_dir`: unknown scheme {shown(scheme['scheme'])}; "
                "a directory or a postgresql:// URL"
            )
        check_path("state_dir", self.state_dir)


class AsyncConfig(_Base, frozen=True):
    """AWS's event invoke config: how async events (files, schedules) are retried."""

    maximum_retry_attempts: Annotated[int, Meta(ge=0, le=2)] = 2
    maximum_event_age: Annotated[int, Meta(ge=60, le=21_600)] = 21_600
    on_success: str | None = None
    on_failure: str | None = None
    retry_delay: Annotated[float, Meta(ge=0, le=3_600)] = 60.0
    """Delay before the second attempt, doubled for the third (AWS: 1 min, then 2 min)."""


class FunctionConfig(_Base, frozen=True):
    handler: Handler
    """AWS's ``module.function`` (``lambda_function.lambda_handler``; nested
    ``pkg.sub.mod.fn`` or ``pkg/sub/mod.fn``) or ``module:function``; for
    ``runtime = "provided"`` free-form, handed to the bootstrap unchanged as ``_HANDLER``."""
    code: str | None = None
    """Directory put on sys.path to import the handler; default: the config file's directory."""
    runtime: Literal["python", "inline", "provided"] = "python"
    """``python``: isolated worker processes; ``inline``: in the engine process (trusted,
    latency-critical handlers); ``provided``: the ``bootstrap`` executable, through the
    Lambda Runtime API."""
    timeout: Annotated[int, Meta(ge=1, le=900)] = 3
    memory_size: Annotated[int, Meta(ge=128, le=10_240)] = 128
    environment: dict[str, str] = {}
    reserved_concurrency: Annotated[int, Meta(ge=0, le=10_000)] | None = None
    async_: AsyncConfig = msgspec.field(default_factory=AsyncConfig, name="async")
    provisioned_concurrency: Annotated[int, Meta(ge=0, le=10_000)] = 0
    """Environments initialised at startup (``AWS_LAMBDA_INITIALIZATION_TYPE`` is
    ``provisioned-concurrency`` in them) and kept while the engine runs."""
    ephemeral_storage: Annotated[int, Meta(ge=512, le=10_240)] = 512
    """MB of ``/tmp`` (``TMPDIR``) per environment."""
    keep_warm: Annotated[float, Meta(ge=0, le=86_400)] = 300.0
    """Seconds an idle on-demand environment is kept for reuse; 0: one invocation each."""
    inherit_environment: tuple[EnvName, ...] = ()
    """Names of the engine's environment variables passed to the function's environments
    (none is by default: credentials in the engine's environment stay there)."""
    bootstrap: str | None = None
    """``runtime = "provided"``: the executable to run, relative to ``code``; default
    ``bootstrap`` in that directory."""
    log_format: LogFormat = "Text"
    """AWS's LoggingConfig: ``JSON`` makes application and platform log lines JSON records
    (``AWS_LAMBDA_LOG_FORMAT``)."""
    application_log_level: ApplicationLogLevel | None = None
    """JSON format only: the lowest level of application records kept (default INFO)."""
    system_log_level: SystemLogLevel | None = None
    """JSON format only: the lowest level of platform records kept (default INFO)."""

    def __post_init__(self) -> None:
        if self.runtime == "provided":
            if "\0" in self.handler:
                raise ValueError("`handler`: may not contain a NUL byte")
        else:
            try:
                parse_handler(self.handler)
            except ValueError as exc:
                raise ValueError(f"`handler`: {exc}") from None
        if self.log_format == "Text":
            for level in ("application_log_level", "system_log_level"):
                if getattr(self, level) is not None:
                    raise ValueError(f'`{level}`: only with log_format = "JSON", as on AWS')
        for variable, value in self.environment.items():
            if not _ENV_NAME.match(variable):
                raise ValueError(
                    f"`environment`: invalid variable name {shown(variable)}: letters, "
                    "digits and '_', not starting with a digit"
                )
            if "\0" in value:
                raise ValueError(f"`environment`: the value of {variable} contains a NUL byte")
            if variable in RESERVED_VARIABLES:
                raise ValueError(
                    f"`environment.{variable}`: reserved by Lambda (the runtime sets it);"
                    " use another name"
                )
        check_path("code", self.code)
        check_path("bootstrap", self.bootstrap)
        if self.bootstrap is not None and self.runtime != "provided":
            raise ValueError('`bootstrap`: only used with runtime = "provided"')
        if self.provisioned_concurrency and self.runtime == "inline":
            raise ValueError(
                '`provisioned_concurrency`: not available with runtime = "inline" '
                "(it has one environment, initialised at startup)"
            )
        reserved = self.reserved_concurrency
        if reserved is not None and self.provisioned_concurrency > reserved:
            raise ValueError(
                f"`provisioned_concurrency`: must be <= reserved_concurrency ({reserved}) "
                f"(got {self.provisioned_concurrency})"
            )


class SourceConfig(_Base, frozen=True, tag_field="type"):
    """Fields every ``[[event_sources]]`` entry has. A connector's config subclasses this
    with ``tag="<connector name>"`` and adds its own fields. Cross-field checks go in
    ``__post_init__``: raise ``ValueError("`field`: what is wrong")`` and the error names
    the field's path."""

    function: FunctionName
    name: Annotated[str, Meta(pattern=r"^[A-Za-z0-9_.-]{1,128}$")] | None = None
    """Stable id of this mapping, under which its checkpoints are kept; default
    ``<function>-<type>``. Two enabled sources may not share one (a ConfigError says so):
    a name that depended on the entry's position would move checkpoints between sources
    when the file is reordered."""
    enabled: bool = True
    filters: tuple[str | dict[str, Any], ...] = ()
    """Up to 5 EventBridge patterns, OR-ed; records matching none are dropped as finished."""
    idempotency_key: str | None = None
    """Dotted path into the event whose value is the idempotency key; default: per connector."""
    idempotency_ttl: Annotated[int, Meta(ge=0, le=30 * 86_400)] = 3_600

    @classmethod
    def type_name(cls) -> str:
        """The connector name this config is tagged with."""
        return str(cls.__struct_config__.tag)

    @property
    def mapping_name(self) -> str:
        """The stable id of this mapping: ``name``, or ``<function>-<type>``."""
        return self.name or f"{self.function}-{self.type_name()}"


class Config(_Base, frozen=True):
    service: ServiceConfig
    functions: dict[str, FunctionConfig]
    event_sources: tuple[SourceConfig, ...]
    path: str
    """The config file, absolute; relative paths in it are taken from its directory."""

    def enabled_sources(self) -> dict[str, SourceConfig]:
        """The enabled event sources by :attr:`SourceConfig.mapping_name`. Raises
        ConfigError if two share one (the loader refuses such a file already)."""
        _check_names(self, file=self.path)
        return {s.mapping_name: s for s in self.event_sources if s.enabled}

    @property
    def root(self) -> Path:
        return Path(self.path).parent

    def resolve(self, path: str) -> Path:
        """A path from the config, made absolute against the config file's directory."""
        return (self.root / path).resolve()

    def code_dir(self, function: str) -> Path:
        code = self.functions[function].code
        return self.resolve(code) if code is not None else self.root

    @property
    def state_dir(self) -> Path:
        return self.resolve(self.service.state_dir)

    @property
    def state_url(self) -> str | None:
        """``[service] state_dir`` when it is a Postgres URL (a shared state store), else None."""
        url = self.service.state_dir
        return url if url.startswith(("postgresql://", "postgres://")) else None


class _RawConfig(_Base, frozen=True):
    service: ServiceConfig = msgspec.field(default_factory=ServiceConfig)
    functions: dict[str, dict[str, Any]] = {}
    event_sources: tuple[dict[str, Any], ...] = ()


_FUNCTION_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def load_config(path: str | Path, connectors: Mapping[str, type[SourceConfig]]) -> Config:
    """Read and validate a config file. ``connectors`` maps each connector name to its
    config Struct (see :mod:`streamfn.plugins`). A UTF-8 byte order mark at the start is
    ignored. Checks that a ``state_dir`` directory could be created or written, without
    creating anything. Raises ConfigError."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise ConfigError("no such file", file=str(path)) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read: {exc}", file=str(path)) from exc
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"not valid TOML: {exc}", file=str(path)) from exc
    except RecursionError:
        raise ConfigError(
            f"not valid TOML: {_deepest(text)}nested too deeply", file=str(path)
        ) from None
    config = parse_config(raw, connectors, path=file)
    _check_state_dir(config, file=str(path))
    return config


def _deepest(text: str) -> str:
    """``line N (key): `` for the line where arrays and inline tables nest deepest."""
    depth, best, best_line, line = 0, 0, 1, 1
    for char in text:
        if char == "\n":
            line += 1
        elif char in "[{":
            depth += 1
            if depth > best:
                best, best_line = depth, line
        elif char in "]}":
            depth = max(0, depth - 1)
    source = text.splitlines()[best_line - 1] if text else ""
    key = source.partition("=")[0].strip() if "=" in source else ""
    named = f" ({key[:_SHOWN]})" if key else ""
    return f"line {best_line}{named}: "


def _check_state_dir(config: Config, *, file: str) -> None:
    """A SQLite ``state_dir`` must be a directory, or creatable: its nearest existing
    ancestor a writable directory. Creates nothing."""
    if config.state_url is not None:
        return
    where = "service.state_dir"
    target = config.state_dir
    if target.exists():
        if not target.is_dir():
            raise ConfigError(f"{target} exists and is not a directory", file=file, path=where)
        if not os.access(target, os.W_OK | os.X_OK):
            raise ConfigError(f"{target} is not writable", file=file, path=where)
        return
    ancestor = target.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise ConfigError(
            f"cannot create {target}: {ancestor} is not a directory", file=file, path=where
        )
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise ConfigError(
            f"cannot create {target}: {ancestor} is not writable", file=file, path=where
        )


def parse_config(
    raw: Mapping[str, Any], connectors: Mapping[str, type[SourceConfig]], *, path: Path
) -> Config:
    file = str(path)
    top = _convert(raw, _RawConfig, file=file, prefix="")
    functions: dict[str, FunctionConfig] = {}
    for name, table in top.functions.items():
        if not _FUNCTION_NAME.match(name):
            raise ConfigError(
                "a function name is 1-64 letters, digits, '-' or '_'",
                file=file,
                path=f"functions.{name}",
            )
        functions[name] = _convert(table, FunctionConfig, file=file, prefix=f"functions.{name}")
    sources = tuple(
        _convert_source(item, index, connectors, file=file)
        for index, item in enumerate(top.event_sources)
    )
    config = Config(
        service=top.service, functions=functions, event_sources=sources, path=str(path.resolve())
    )
    _check_references(config, file=file)
    _check_names(config, file=file)
    return config


def _convert_source(
    item: Mapping[str, Any], index: int, connectors: Mapping[str, type[SourceConfig]], *, file: str
) -> SourceConfig:
    prefix = f"event_sources[{index}]"
    kind = item.get("type")
    if kind is None:
        raise ConfigError(f"missing `type`; one of: {_names(connectors)}", file=file, path=prefix)
    if not isinstance(kind, str) or kind not in connectors:
        raise ConfigError(
            f"unknown connector {shown(kind)}; installed connectors: {_names(connectors)}",
            file=file,
            path=f"{prefix}.type",
        )
    return _convert(item, connectors[kind], file=file, prefix=prefix)


def _names(connectors: Mapping[str, object]) -> str:
    return ", ".join(sorted(connectors)) or "(none)"


_ERROR_AT = re.compile(r"^(?P<message>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.DOTALL)
_UNKNOWN_FIELD = re.compile(r"^Object contains unknown field `(?P<field>[^`]+)`$")
_MISSING_FIELD = re.compile(r"^Object missing required field `(?P<field>[^`]+)`$")
_FIELD_CHECK = re.compile(r"^`(?P<field>\w+)`: (?P<message>.*)$", re.DOTALL)


_T = TypeVar("_T")


def _convert(raw: Any, kind: type[_T], *, file: str, prefix: str) -> _T:
    try:
        return msgspec.convert(raw, kind, strict=True)
    except RecursionError:
        raise ConfigError("nested too deeply", file=file, path=prefix or None) from None
    except msgspec.ValidationError as exc:
        match = _ERROR_AT.match(str(exc))
        assert match is not None  # the pattern matches any string
        message, rel = match["message"], match["path"] or ""
        parts = _find_keys(raw, kind, _split_path(rel))
        unknown = _UNKNOWN_FIELD.match(message)
        if unknown:
            allowed = _fields_at(kind, parts)
            message = "unknown field"
            if allowed:
                message += f"; allowed fields: {', '.join(allowed)}"
            parts = [*parts, unknown["field"]]
        elif missing := _MISSING_FIELD.match(message):
            message = "required field is missing"
            parts = [*parts, missing["field"]]
        elif message.startswith("Invalid enum value"):
            allowed = _allowed_values(kind, parts)
            got = _value_at(raw, parts)
            message = "invalid enum value" + (f" {shown(got)}" if got is not _MISSING else "")
            if allowed:
                message += f"; allowed: {', '.join(allowed)}"
        elif named := _FIELD_CHECK.match(message):
            message = named["message"]
            parts = [*parts, named["field"]]
        else:
            message = message[0].lower() + message[1:]
            got = _value_at(raw, parts)
            if got is not _MISSING:
                message += f" (got {shown(got)})"
        if not unknown and len(message) > _MESSAGE:  # a list of allowed fields stays whole
            message = message[: _MESSAGE - 3] + "..."
        dotted = _join_path(prefix, parts)
        raise ConfigError(message, file=file, path=dotted or None) from None


class _AnyKey:
    """A dict key msgspec's error path leaves out (``[...]``); see :func:`_find_keys`."""


def _split_path(path: str) -> list[str | int | _AnyKey]:
    parts: list[str | int | _AnyKey] = []
    for name, index, dots in re.findall(r"\.([^.\[]+)|\[(\d+)\]|\[(\.\.\.)\]", path):
        parts.append(_AnyKey() if dots else int(index) if index else name)
    return parts


def _find_keys(raw: Any, kind: Any, parts: list[str | int | _AnyKey]) -> list[str | int]:
    """``parts`` with each unnamed dict key replaced by the first key whose value does
    not convert to the declared type (msgspec names the dict, not the key)."""
    found: list[str | int] = []
    for part in parts:
        if isinstance(part, _AnyKey):
            table, value_type = _value_at(raw, found), _type_at(kind, [*found, "*"])
            bad = None
            if isinstance(table, dict) and value_type is not None:
                for key, value in table.items():
                    try:
                        msgspec.convert(value, value_type, strict=True)
                    except (msgspec.ValidationError, RecursionError):
                        bad = key
                        break
            if bad is None:
                return found
            part = str(bad)
        found.append(part)
    return found


_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def _join_path(prefix: str, parts: list[str | int]) -> str:
    out = prefix
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        elif _BARE_KEY.match(part):
            out += f".{part[:_SHOWN]}" if out else part[:_SHOWN]
        else:  # as TOML writes the key: a quoted string
            quoted = msgspec.json.encode(part[:_SHOWN]).decode()
            out += f".{quoted}" if out else quoted
    return out


_MISSING = object()


def _value_at(raw: Any, parts: list[str | int]) -> Any:
    for part in parts:
        try:
            raw = raw[part]
        except (KeyError, IndexError, TypeError):
            return _MISSING
    return raw


def _type_at(kind: Any, parts: list[str | int]) -> Any:
    """The declared type found at ``parts`` below the Struct type ``kind`` (or None)."""
    for part in parts:
        if isinstance(kind, type) and issubclass(kind, msgspec.Struct):
            fields = {f.encode_name: f.type for f in msgspec.structs.fields(kind)}
            kind = fields.get(str(part))
        else:  # a container: list[X], tuple[X, ...], dict[K, X]
            args = [arg for arg in getattr(kind, "__args__", ()) if arg is not Ellipsis]
            kind = args[-1] if args else None
        kind = _unwrap(kind)
    return kind


def _fields_at(kind: Any, parts: list[str | int]) -> list[str]:
    """Names of the fields allowed in the Struct found at ``parts`` below ``kind``."""
    found = _type_at(kind, parts)
    if isinstance(found, type) and issubclass(found, msgspec.Struct):
        return [f.encode_name for f in msgspec.structs.fields(found)]
    return []


def _allowed_values(kind: Any, parts: list[str | int]) -> list[str]:
    """The values a ``Literal`` (or a tuple of one) at ``parts`` allows."""
    found = _type_at(kind, parts)
    if getattr(found, "__origin__", None) is Literal:
        return [str(value) for value in found.__args__]
    return []


def _unwrap(kind: Any) -> Any:
    """``X | None`` and ``Annotated[X, ...]`` → ``X``."""
    while True:
        origin = getattr(kind, "__origin__", None)
        if origin is Annotated or getattr(kind, "__metadata__", None) is not None:
            kind = kind.__origin__
            continue
        args = getattr(kind, "__args__", None)
        if args and type(None) in args and len(args) == 2:
            kind = next(a for a in args if a is not type(None))
            continue
        return kind


def _check_references(config: Config, *, file: str) -> None:
    from streamfn.filtering import compile_filters
    from streamfn.invoke.destinations import parse_destination

    for name, function in config.functions.items():
        for field in ("on_success", "on_failure"):
            uri = getattr(function.async_, field)
            if uri is None:
                continue
            path = f"functions.{name}.async.{field}"
            try:
                destination = parse_destination(uri)
            except InvalidDestinationError as exc:
                raise ConfigError(str(exc), file=file, path=path) from None
            target = getattr(destination, "function", None)
            if target is not None and target not in config.functions:
                raise ConfigError(f"function {target!r} is not defined", file=file, path=path)
            if destination.scheme not in ("dir", "function"):
                raise ConfigError(
                    f"{destination.scheme}: destinations are not available for async "
                    "invocations; use dir:PATH or function:NAME",
                    file=file,
                    path=path,
                )
    for index, source in enumerate(config.event_sources):
        path = f"event_sources[{index}]"
        on_failure = getattr(source, "on_failure", None)
        if isinstance(on_failure, str):
            target = getattr(parse_destination(on_failure), "function", None)
            if target is not None and target not in config.functions:
                raise ConfigError(
                    f"function {target!r} is not defined", file=file, path=f"{path}.on_failure"
                )
        if source.function not in config.functions:
            defined = ", ".join(sorted(config.functions)) or "(none)"
            raise ConfigError(
                f"function {source.function!r} is not defined; defined functions: {defined}",
                file=file,
                path=f"{path}.function",
            )
        if len(source.filters) > 5:
            raise ConfigError(
                f"at most 5 filters are allowed (got {len(source.filters)})",
                file=file,
                path=f"{path}.filters",
            )
        for position, pattern in enumerate(source.filters):
            try:
                compile_filters([pattern])
            except InvalidPatternError as exc:
                raise ConfigError(str(exc), file=file, path=f"{path}.filters[{position}]") from None


def _check_names(config: Config, *, file: str) -> None:
    """Two enabled sources may not share a mapping name: the name keys their checkpoints."""
    taken: dict[str, int] = {}
    for index, source in enumerate(config.event_sources):
        if not source.enabled:
            continue
        name = source.mapping_name
        first = taken.setdefault(name, index)
        if first == index:
            continue
        other = config.event_sources[first]
        if source.name is None and other.name is None:
            message = (
                f"event_sources[{first}] and event_sources[{index}] both map function "
                f"{source.function!r} with type {source.type_name()!r}; give each a distinct "
                "`name` (its checkpoints are kept under that name, so it must not depend on "
                "the order of the entries)"
            )
        else:
            message = (
                f"event_sources[{first}] and event_sources[{index}] are both named {name!r}; "
                "give each a distinct `name` (its checkpoints are kept under that name)"
            )
        where = f"event_sources[{index}]" + (".name" if source.name is not None else "")
        raise ConfigError(message, file=file, path=where)
