"""``streamfn`` (and ``python -m streamfn``): the command line.

    streamfn run [CONFIG] [--embedded-kafka] the long-running service
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
import os
import signal
import sys
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

import anyio
import msgspec

from streamfn.config import Config, load_config
from streamfn.errors import ConfigError, InvalidPatternError, StreamfnError
from streamfn.plugins import Registry
from streamfn.runtime.base import FUNCTION_LOGGER
from streamfn.streams.contract import StreamSourceConfig

if TYPE_CHECKING:
    from streamfn.engine import Engine

DEFAULT_CONFIG = "streamfn.toml"
EMBEDDED_KAFKA_ENV = "STREAMFN_EMBEDDED_KAFKA"
EMBEDDED_PARTITIONS = 3  # of each topic created on the embedded broker


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    # `invoke` keeps stdout for the result; the function's log lines go to stderr.
    function_lines = sys.stderr if args.command is _invoke else sys.stdout
    _configure_logging(getattr(args, "verbose", False), function_lines)
    try:
        code: int = args.command(args)
    except ConfigError as exc:
        print(f"streamfn: config error: {exc}", file=sys.stderr)
        return 2
    except StreamfnError as exc:
        print(f"streamfn: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return code


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="streamfn", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="run the pipeline service")
    run.add_argument("config", nargs="?", default=DEFAULT_CONFIG)
    run.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    run.add_argument(
        "--embedded-kafka",
        action="store_true",
        help='start a Kafka-compatible broker for sources with bootstrap_servers = "embedded"',
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
    embedded = _embedded_topics(config)
    if embedded and not args.embedded_kafka:
        raise ConfigError(
            'bootstrap_servers = "embedded" needs `streamfn run --embedded-kafka`', file=args.config
        )

    async def main() -> None:
        async with contextlib.AsyncExitStack() as stack:
            if args.embedded_kafka:
                engine = Engine(await _start_embedded_kafka(stack, config, embedded), registry)
            else:
                engine = Engine(config, registry)
            await _serve(engine)

    anyio.run(main, backend_options={"use_uvloop": True})
    return 0


def _embedded_topics(config: Config) -> set[str]:
    """Topics of the sources that use the embedded broker (none: no source does)."""
    topics: set[str] = set()
    for source in config.event_sources:
        if isinstance(source, StreamSourceConfig):
            topics.update(source.embedded_kafka_topics())
    return topics


async def _start_embedded_kafka(
    stack: contextlib.AsyncExitStack, config: Config, topics: set[str]
) -> Config:
    """Start the embedded broker for the rest of ``stack``, create ``topics`` on it, and
    return ``config`` with ``bootstrap_servers = "embedded"`` pointed at it. Functions
    find it in the environment variable ``STREAMFN_EMBEDDED_KAFKA`` (host:port)."""
    from streamfn.embedded import create_topic, open_embedded_kafka

    broker = await stack.enter_async_context(open_embedded_kafka())
    servers = broker.bootstrap_servers
    for topic in sorted(topics):
        await create_topic(servers, topic, EMBEDDED_PARTITIONS, exist_ok=True)
    os.environ[EMBEDDED_KAFKA_ENV] = servers
    logging.getLogger("streamfn").info(
        "embedded Kafka broker at %s (memory storage; topics: %s)",
        servers,
        ", ".join(sorted(topics)) or "none yet",
    )
    sources = tuple(
        source.with_embedded_kafka(servers) if isinstance(source, StreamSourceConfig) else source
        for source in config.event_sources
    )
    return msgspec.structs.replace(config, event_sources=sources)


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
        failure: StreamfnError | None = None
        try:
            await engine.run()
        except StreamfnError as exc:  # raised after the group, so main() reports it plainly
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

        async with open_runtime(config, clock=SystemClock()) as runtime:
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
