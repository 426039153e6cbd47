"""The ``python`` and ``provided`` runtimes: a pool of execution environments per function.

Theory of operation:

- :func:`open_process_runtime` starts the template process, then initialises each
  function's first environment — ``provisioned_concurrency`` of them for a function that
  has it — so a handler that cannot be imported fails the start with HandlerImportError,
  as with the inline runtime. The first invocation of an on-demand environment reports its
  ``Init Duration``; provisioned ones (``AWS_LAMBDA_INITIALIZATION_TYPE=
  provisioned-concurrency``) never do.
- :meth:`ProcessRuntime.invoke` takes an idle environment of the function (the most
  recently used) or starts one (a cold start: fork, then init, limited to 10 s), logs
  START, sends the invocation, and waits for the reply with a watchdog on the clock. It
  never waits for a slot: the invoker has already taken one, so at most
  ``reserved_concurrency`` environments of a function — and ``max_concurrency`` in all —
  are busy. Starting an environment when ``max_concurrency`` exist already evicts the
  least recently used idle one.
- Every ending is a result: a reply (success, function error, ``Runtime.OutOfMemory``,
  ``Runtime.ExitError`` for ``sys.exit``); a timeout (SIGKILL the environment's process
  group, ``Sandbox.Timedout``, ``Status: timeout``); a process that died without replying
  (``Runtime.ExitError`` with its exit status or signal; what it started in its process
  group is killed with it). Output still in the pipe is logged before END and REPORT;
  ``Max Memory Used`` is the environment's peak RSS.
- After the invocation the environment goes back to the pool, unless it is gone or must be
  replaced; idle on-demand environments are closed after ``keep_warm`` seconds, and a
  provisioned one that ends is started again.
- The template is replaced when it dies (a handler killed it, the OOM killer chose it):
  the environments it forked die with it, so each invocation running in one ends as a
  crash (``Runtime.ExitError``, ``signal: killed``), idle ones are dropped, provisioned
  ones are started again, and the next invocation forks from the new template.
- Cancellation (engine shutdown past its grace period) closes the environment the
  invocation was running in; closing the runtime closes every environment and the
  template, and waits for them to be reaped.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import anyio
import anyio.abc
import msgspec

from streamfn.clock import Clock
from streamfn.errors import HandlerImportError
from streamfn.runtime import envelope
from streamfn.runtime.base import FUNCTION_LOGGER
from streamfn.runtime.deadlines import Deadlines
from streamfn.runtime.handlers import log_init_error
from streamfn.runtime.invocation import Ended
from streamfn.runtime.policy import FunctionSpec, RuntimePolicy
from streamfn.runtime.process.environment import (
    Environment,
    InitError,
    Reply,
    crash_reply,
)
from streamfn.runtime.process.forkserver import ForkServer, TemplateError, Templates
from streamfn.runtime.process.launch import Launch, launch
from streamfn.runtime.process.protocol import Invoke
from streamfn.runtime.tracing import trace_header
from streamfn.types import InvocationRequest, InvocationResult

INIT_LIMIT = 10.0


class ProcessRuntimeStatistics(msgspec.Struct, frozen=True, kw_only=True):
    environments: int
    """Environments alive (busy, idle or starting), all functions."""
    idle: dict[str, int]
    """Warm environments waiting for an invocation, per function."""
    storage: str
    """How /tmp is limited: ``tmpfs`` (a private mount per environment) or ``rlimit``."""
    templates: int = 1
    """Template processes started: 1, plus one for each that died and was replaced."""


class _Pool:
    def __init__(self, spec: FunctionSpec) -> None:
        self.name = spec.name
        self.config = spec
        self.style = envelope.Style.of(spec)
        self.idle: list[Environment] = []  # most recently used last
        self.provisioned = 0  # live provisioned environments


class ProcessRuntime:
    """Runs invocations in environment processes; built by :func:`open_process_runtime`."""

    def __init__(
        self,
        policy: RuntimePolicy,
        templates: Templates,
        tasks: anyio.abc.TaskGroup,
        *,
        clock: Clock,
        log: logging.Logger,
        base_dir: Path,
    ) -> None:
        self._policy = policy
        self._pools = {name: _Pool(spec) for name, spec in policy.functions.items()}
        self._templates = templates
        self._tasks = tasks
        self._clock = clock
        self._log = log
        self._base_dir = base_dir
        self._ids = itertools.count(1)
        self._live = 0
        self._closing = False
        self._deadlines = Deadlines(clock)

    async def invoke(self, request: InvocationRequest) -> InvocationResult:
        """See :class:`streamfn.runtime.base.Runtime`. Raises LookupError for a function
        this runtime does not run (a bug in the caller)."""
        pool = self._pools.get(request.function)
        if pool is None:
            raise LookupError(f"function {request.function!r} is not loaded in this runtime")
        rid, timeout = request.request_id, pool.config.timeout
        began = self._clock.monotonic()
        try:
            env = await self._acquire(pool)
        except InitError as exc:
            return self._init_failed(pool, rid, exc, began)
        init_ms, env.init_ms = env.init_ms, None
        style = pool.style
        envelope.start(self._log, rid, style=style, now=self._clock.time())
        env.output.request_id = rid
        invoke = Invoke(
            request_id=rid,
            payload=request.payload,
            remaining_ms=timeout * 1000,
            invoked_function_arn=self._policy.arn(pool.name, request.qualifier),
            log_stream_name=env.log_stream_name,
            trace_id=trace_header(request.trace_context, now=self._clock.time()),
        )
        started = self._clock.monotonic()
        reply: Reply | None = None
        try:
            with self._deadlines.limit(started + timeout) as expiry:
                reply = await env.call(invoke)
        except BaseException:  # cancelled (shutdown): the environment is mid-invocation
            env.output.request_id = None
            self._discard(env)
            raise
        duration_ms = (self._clock.monotonic() - started) * 1000
        if reply is None:
            with anyio.CancelScope(shield=True):  # a moment: the template reaps at once
                await env.kill()
                reason = await env.died()
            if expiry.cancelled_caught:
                ended = envelope.timed_out(self._log, rid, timeout, self._clock.time(), style=style)
                reply = Reply(ended.outcome, ended.payload, ended.error_type, replace=True)
            else:
                reply = crash_reply(rid, reason, env.exit.max_rss_kb)
        env.output.drain()
        env.output.request_id = None
        self._release(pool, env, replace=reply.replace)
        return envelope.finish(
            self._log,
            rid,
            Ended(reply.outcome, reply.payload, reply.error_type, reply.error),
            duration_ms=duration_ms,
            memory_size_mb=pool.config.memory_size,
            max_memory_used_mb=math.ceil((reply.max_rss_kb or env.exit.max_rss_kb) / 1024),
            init_duration_ms=init_ms,
            timeout=timeout,
            style=style,
            now=self._clock.time(),
        )

    async def prestart(self, *, strict: bool = True) -> None:
        """Start each function's first environments (see the module docstring): all its
        provisioned ones, else one while fewer than ``max_concurrency`` exist. Raises
        HandlerImportError for the first init that fails when ``strict``; otherwise logs
        each failing function once (its invocations then fail their init, as on AWS)."""
        plan = [
            (p, True) for p in self._pools.values() for _ in range(p.config.provisioned_concurrency)
        ]
        budget = self._policy.max_concurrency - len(plan)
        for pool in self._pools.values():
            if not pool.config.provisioned_concurrency and budget > 0:
                plan.append((pool, False))
                budget -= 1
        failures: list[tuple[_Pool, InitError]] = []

        async def start(pool: _Pool, provisioned: bool) -> None:
            try:
                env = await self._start(pool, provisioned=provisioned)
            except InitError as exc:
                failures.append((pool, exc))
            else:
                self._release(pool, env, replace=False)

        async with anyio.create_task_group() as tasks:
            for pool, provisioned in plan:
                tasks.start_soon(start, pool, provisioned)
        if failures and strict:
            pool, exc = failures[0]
            raise HandlerImportError(pool.config.handler, exc.error_type, exc.message)
        first: dict[str, tuple[_Pool, InitError]] = {}
        for pool, exc in failures:
            first.setdefault(pool.name, (pool, exc))
        for pool, exc in first.values():
            log_init_error(pool.name, pool.config.handler, exc.error_type, exc.message)

    async def run_watchdog(self) -> None:
        """Cancel invocations and inits at their deadlines; the owner's task."""
        await self._deadlines.run()

    async def run_reaper(self) -> None:
        """Close idle on-demand environments past their ``keep_warm``; the owner's task."""
        warm = [p.config.keep_warm for p in self._pools.values() if p.config.keep_warm > 0]
        interval = min(max(min(warm, default=60.0) / 4, 0.05), 30.0)
        while True:
            await self._clock.sleep(interval)
            now = self._clock.monotonic()
            for pool in self._pools.values():
                keep_warm = pool.config.keep_warm
                for env in list(pool.idle):
                    if not env.provisioned and now - env.last_used >= keep_warm:
                        pool.idle.remove(env)
                        self._discard(env)

    def statistics(self) -> ProcessRuntimeStatistics:
        return ProcessRuntimeStatistics(
            environments=self._live,
            idle={name: len(pool.idle) for name, pool in self._pools.items()},
            storage=self._templates.storage,
            templates=self._templates.started,
        )

    def close(self) -> None:
        self._closing = True

    def template_died(self, server: ForkServer) -> None:
        """The template died and its environments with it: drop the idle ones now (the
        provisioned among them are started again, on its replacement)."""
        for pool in self._pools.values():
            for env in [env for env in pool.idle if not env.alive]:
                pool.idle.remove(env)
                self._discard(env)

    async def _acquire(self, pool: _Pool) -> Environment:
        while pool.idle:
            env = pool.idle.pop()
            if env.alive:
                return env
            self._discard(env)
        return await self._start(pool, provisioned=False)

    def _release(self, pool: _Pool, env: Environment, *, replace: bool) -> None:
        keep = env.provisioned or pool.config.keep_warm > 0
        if replace or not keep or not env.alive or self._closing:
            self._discard(env)
            return
        env.last_used = self._clock.monotonic()
        pool.idle.append(env)

    def _discard(self, env: Environment) -> None:
        """Close an environment in the background (the caller does not wait for it)."""
        self._tasks.start_soon(self._destroy, env)

    async def _destroy(self, env: Environment) -> None:
        await env.close()
        self._live -= 1
        pool = self._pools[env.function]
        if env.provisioned:
            pool.provisioned -= 1
            if env.ready and not self._closing:  # not one that failed its init: no loop
                self._tasks.start_soon(self._replenish, pool)

    async def _replenish(self, pool: _Pool) -> None:
        if pool.provisioned >= pool.config.provisioned_concurrency:
            return
        try:
            env = await self._start(pool, provisioned=True)
        except InitError as exc:
            self._log.error(f"provisioned environment of {pool.name} failed to start: {exc}")
            return
        self._release(pool, env, replace=False)

    async def _start(self, pool: _Pool, *, provisioned: bool) -> Environment:
        """A new environment, initialised. Raises InitError."""
        self._make_room()
        self._live += 1
        if provisioned:
            pool.provisioned += 1
        began = self._clock.monotonic()
        try:
            env = await self._spawn(pool, provisioned=provisioned)
        except BaseException:
            self._live -= 1
            pool.provisioned -= provisioned
            raise
        self._tasks.start_soon(env.run)
        try:
            with self._deadlines.limit(began + INIT_LIMIT) as expiry:
                await env.started()
        except BaseException:  # InitError, or cancelled
            self._discard(env)
            raise
        if expiry.cancelled_caught:
            self._discard(env)
            raise InitError(
                "Runtime.InitTimeout", f"Init phase timed out after {INIT_LIMIT:.2f} seconds"
            )
        env.init_ms = None if provisioned else (self._clock.monotonic() - began) * 1000
        env.ready = True
        return env

    async def _spawn(self, pool: _Pool, *, provisioned: bool) -> Environment:
        """Fork from the live template; once more from its replacement if it dies during
        the fork. Raises InitError."""
        for attempt in range(2):
            what = Launch(
                env_id=next(self._ids),
                function=pool.name,
                config=pool.config,
                region=self._policy.region,
                base_dir=self._base_dir,
                provisioned=provisioned,
            )
            server = await self._templates.current()
            try:
                return await launch(server, what, clock=self._clock, log=self._log)
            except TemplateError as exc:
                if attempt:
                    raise InitError("Runtime.Unknown", str(exc)) from exc
                # its control channel is gone; wait (briefly) until the reader knows, so
                # current() returns its replacement
                with self._deadlines.limit(self._clock.monotonic() + 1.0):
                    await server.died.wait()
        raise AssertionError("unreachable")

    def _make_room(self) -> None:
        """At ``max_concurrency`` environments, close the least recently used idle one."""
        if self._live < self._policy.max_concurrency:
            return
        idle = [
            (env.last_used, env.env_id, pool, env)
            for pool in self._pools.values()
            for env in pool.idle
            if not env.provisioned
        ]
        if idle:
            _, _, pool, env = min(idle, key=lambda item: item[:2])
            pool.idle.remove(env)
            self._discard(env)

    def _init_failed(self, pool: _Pool, rid: str, exc: InitError, began: float) -> InvocationResult:
        return envelope.init_failed(
            self._log,
            rid,
            message=exc.message,
            error_type=exc.error_type,
            memory_size_mb=pool.config.memory_size,
            max_memory_used_mb=0,
            init_duration_ms=(self._clock.monotonic() - began) * 1000,
            timeout=pool.config.timeout,
            style=pool.style,
            now=self._clock.time(),
        )


@contextlib.asynccontextmanager
async def open_process_runtime(
    policy: RuntimePolicy,
    *,
    clock: Clock,
    log: logging.Logger | None = None,
    strict: bool = True,
) -> AsyncIterator[ProcessRuntime]:
    """Start the template and each function's first environments, then yield the runtime.
    Raises HandlerImportError (a handler or bootstrap fails its init) when ``strict``;
    otherwise see :meth:`ProcessRuntime.prestart`. The policy's
    provisioned environments must fit in its ``max_concurrency``
    (:func:`streamfn.policies.runtime_policy` checks it)."""
    base_dir = Path(tempfile.mkdtemp(prefix="streamfn-env-"))
    try:
        with _unwrapped():
            async with _opened(policy, clock, log, base_dir, strict) as runtime:
                yield runtime
    finally:
        await anyio.to_thread.run_sync(_remove_tree, base_dir)


@contextlib.asynccontextmanager
async def _opened(
    policy: RuntimePolicy, clock: Clock, log: logging.Logger | None, base_dir: Path, strict: bool
) -> AsyncIterator[ProcessRuntime]:
    templates = Templates(clock=clock, log=logging.getLogger("streamfn.runtime"))
    async with anyio.create_task_group() as supervisor:
        await supervisor.start(templates.run)
        try:
            # environments' tasks end before the template goes (it reaps them)
            async with anyio.create_task_group() as tasks:
                runtime = ProcessRuntime(
                    policy,
                    templates,
                    tasks,
                    clock=clock,
                    log=log or logging.getLogger(FUNCTION_LOGGER),
                    base_dir=base_dir,
                )
                templates.on_death = runtime.template_died
                try:
                    tasks.start_soon(runtime.run_watchdog)
                    await runtime.prestart(strict=strict)
                    tasks.start_soon(runtime.run_reaper)
                    yield runtime
                finally:
                    runtime.close()
                    tasks.cancel_scope.cancel()
        finally:
            supervisor.cancel_scope.cancel()


@contextlib.contextmanager
def _unwrapped() -> Iterator[None]:
    """Raise what was raised, not the task groups' wrapping of it: a caller of
    :func:`open_process_runtime` sees HandlerImportError, or its own exception, as with
    the inline runtime."""
    try:
        yield
    except BaseExceptionGroup as group:
        error: BaseException = group
        while isinstance(error, BaseExceptionGroup) and len(error.exceptions) == 1:
            error = error.exceptions[0]
        if error is group:
            raise
        raise error from None


def _remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
