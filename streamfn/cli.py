"""``streamfn`` (and ``python -m streamfn``): the command line.

    streamfn run [CONFIG] [--embedded-NAME]  the long-running service (--embedded-kafka:
                                             a broker for bootstrap_servers = "embedded")
    streamfn validate [CONFIG]               check a config file; exit 2 on an error
    streamfn invoke FUNCTION [--payload JSON | --payload @FILE] [--config CONFIG]
    streamfn test-pattern PATTERN EVENT      EventBridge TestEventPattern: prints true/false

Exit codes: 0 success; 1 a function error (invoke), no match (test-pattern) or a startup
failure; 2 invalid config, pattern or arguments.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import signal
import sys
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

import anyio
import msgspec

from streamfn.config import Config, SourceConfig, load_config
from streamfn.errors import ConfigError, InvalidPatternError, stopped_by
from streamfn.plugins import EmbeddedServices, Registry
from streamfn.runtime.base import FUNCTION_LOGGER

if TYPE_CHECKING:
    from streamfn.engine import Engine

DEFAULT_CONFIG = "streamfn.toml"


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(_spell_embedded(sys.argv[1:] if argv is None else argv))
    # `invoke` keeps stdout for the result; the function's log lines go to stderr.
    function_lines = sys.stderr if args.command is _invoke else sys.stdout
    _configure_logging(getattr(args, "verbose", False), function_lines)
    try:
        code: int = args.command(args)
    except KeyboardInterrupt:
        return 130
    except Exception as caught:
        # Exception groups (from task groups) are unwrapped; an unexpected error is logged
        # once with its traceback (unless the engine did already) and summed up in one line.
        exc = stopped_by(caught, logging.getLogger("streamfn"))
        if isinstance(exc, ConfigError):
            print(f"streamfn: config error: {exc}", file=sys.stderr)
            return 2
        print(f"streamfn: {exc}", file=sys.stderr)
        return 1
    return code


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="streamfn", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="run the pipeline service")
    run.add_argument("config", nargs="?", default=DEFAULT_CONFIG)
    run.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    run.add_argument(
        "--embedded",
        action="append",
        default=[],
        metavar="CONNECTOR",
        help="start the connector's embedded services for the run; also spelled "
        '--embedded-CONNECTOR (--embedded-kafka: a broker for bootstrap_servers = "embedded")',
    )
    run.add_argument(
        "--strict",
        action="store_true",
        help="fail the start when a handler cannot be imported (default: log it once; only"
        " that function's invocations fail)",
    )
    run.set_defaults(command=_run)

    validate = commands.add_parser("validate", help="check a config file")
    validate.add_argument("config", nargs="?", default=DEFAULT_CONFIG)
    validate.set_defaults(command=_validate)

    invoke = commands.add_parser("invoke", help="run one invocation and print its result")
    invoke.add_argument("function")
    invoke.add_argument("--payload", default="{}", help="JSON, or @FILE to read it from a file")
    invoke.add_argument("--config", default=DEFAULT_CONFIG)
    invoke.set_defaults(command=_invoke)

    pattern = commands.add_parser("test-pattern", help="does EVENT match the filter PATTERN?")
    pattern.add_argument("pattern", help="pattern JSON")
    pattern.add_argument("event", help="event JSON")
    pattern.set_defaults(command=_test_pattern)
    return parser


def _configure_logging(verbose: bool, function_lines: TextIO) -> None:
    engine = logging.StreamHandler(sys.stderr)
    engine.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [engine]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    logging.getLogger("aiokafka").setLevel(logging.WARNING)
    # The pool warns at each reconnect attempt; the store logs an outage once (state/outage.py).
    logging.getLogger("psycopg.pool").setLevel(logging.ERROR)
    logging.getLogger("watchfiles").setLevel(logging.WARNING)
    functions = logging.getLogger(FUNCTION_LOGGER)
    lines = logging.StreamHandler(function_lines)
    lines.setFormatter(logging.Formatter("%(message)s"))
    functions.handlers[:] = [lines]
    functions.propagate = False
    functions.setLevel(logging.INFO)


def _load(path: str) -> tuple[Config, Registry]:
    registry = Registry.discover()
    return load_config(path, registry), registry


def _run(args: argparse.Namespace) -> int:
    from streamfn.engine import Engine

    config, registry = _load(args.config)
    services = _embedded_services(config, registry, args.embedded, args.config)

    async def main() -> None:
        async with contextlib.AsyncExitStack() as stack:
            sources: Sequence[SourceConfig] = config.event_sources
            for embedded in services:
                log = logging.getLogger("streamfn")
                sources = await stack.enter_async_context(embedded.open(sources, log))
            running = msgspec.structs.replace(config, event_sources=tuple(sources))
            await _serve(Engine(running, registry, strict=args.strict))

    anyio.run(main, backend_options={"use_uvloop": True})
    return 0


def _spell_embedded(argv: list[str]) -> list[str]:
    """``--embedded-NAME`` is ``--embedded NAME`` (so ``--embedded-kafka`` keeps working
    while the CLI names no connector)."""
    out: list[str] = []
    for arg in argv:
        if arg.startswith("--embedded-") and len(arg) > len("--embedded-") and "=" not in arg:
            out += ["--embedded", arg[len("--embedded-") :]]
        else:
            out.append(arg)
    return out


def _embedded_services(
    config: Config, registry: Registry, names: Sequence[str], file: str
) -> list[EmbeddedServices]:
    """The connectors' embedded services that ``--embedded`` names. Raises ConfigError when
    a named connector has none, or when a source needs services that were not named."""
    services: list[EmbeddedServices] = []
    for name in dict.fromkeys(names):
        embedded = registry.connector(name).embedded
        if embedded is None:
            raise ConfigError(f"--embedded-{name}: connector {name!r} has no embedded services")
        services.append(embedded)
    used = {source.type_name() for source in config.event_sources}
    for name in sorted(used - set(names)):
        embedded = registry.connector(name).embedded
        if embedded is not None and (why := embedded.needed(config.event_sources)) is not None:
            raise ConfigError(f"{why} needs `streamfn run --embedded-{name}`", file=file)
    return services


async def _serve(engine: Engine) -> None:
    """Run ``engine`` until it stops; SIGINT or SIGTERM stops it gracefully."""
    async with anyio.create_task_group() as tg:

        async def on_signal() -> None:
            with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                async for signum in signals:
                    logging.getLogger("streamfn").info("received %s", signal.Signals(signum).name)
                    engine.stop()
                    break

        tg.start_soon(on_signal)
        failure: Exception | None = None
        try:
            await engine.run()
        except Exception as exc:  # raised after the group, so main() reports it plainly
            failure = exc
        tg.cancel_scope.cancel()
    if failure is not None:
        raise failure


def _validate(args: argparse.Namespace) -> int:
    try:
        config, _ = _load(args.config)
    except ConfigError as exc:
        print(f"{exc}", file=sys.stderr)
        return 2
    print(
        f"{args.config}: ok ({len(config.functions)} function(s), "
        f"{len(config.event_sources)} event source(s))"
    )
    return 0


def _invoke(args: argparse.Namespace) -> int:
    from streamfn.policies import runtime_policy
    from streamfn.runtime.router import open_runtime
    from streamfn.types import InvocationRequest

    config, _ = _load(args.config)
    if args.function not in config.functions:
        defined = ", ".join(sorted(config.functions)) or "(none)"
        print(f"streamfn: no function {args.function!r}; defined: {defined}", file=sys.stderr)
        return 2
    payload: bytes = (
        Path(args.payload[1:]).read_bytes()
        if args.payload.startswith("@")
        else args.payload.encode()
    )
    try:
        msgspec.json.decode(payload)
    except msgspec.DecodeError as exc:
        print(f"streamfn: --payload is not valid JSON: {exc}", file=sys.stderr)
        return 2

    async def main() -> bool:
        from streamfn.clock import SystemClock

        # Another function's broken handler does not stop this one; a broken one's
        # invocation fails with Lambda's init error object (printed, exit 1).
        policy = runtime_policy(config)
        async with open_runtime(policy, clock=SystemClock(), strict=False) as runtime:
            request = InvocationRequest(
                function=args.function, payload=payload, request_id=str(uuid.uuid4())
            )
            with contextlib.redirect_stdout(sys.stderr):  # the handler's prints are logs
                result = await runtime.invoke(request)
        sys.stdout.write(result.payload.decode("utf-8", errors="replace") + "\n")
        return result.ok

    ok = anyio.run(main, backend_options={"use_uvloop": True})
    return 0 if ok else 1


def _test_pattern(args: argparse.Namespace) -> int:
    from streamfn.filtering import EventPattern

    try:
        pattern = EventPattern.parse(args.pattern)
    except InvalidPatternError as exc:
        print(f"invalid pattern: {exc}", file=sys.stderr)
        return 2
    try:
        event = msgspec.json.decode(args.event)
    except msgspec.DecodeError as exc:
        print(f"invalid event: {exc}", file=sys.stderr)
        return 2
    matched = pattern.matches(event)
    print("true" if matched else "false")
    return 0 if matched else 1
