"""Integration fixtures: real `streamfn run` processes, waited on by condition."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from kafka_broker import kafka_broker, new_topic  # noqa: F401  (fixtures, registered by import)

from streamfn.runtime.base import FUNCTION_LOGGER


def wait_for(
    condition: Callable[[], object], *, timeout: float = 30.0, message: str = "condition"
) -> object:
    """Poll ``condition`` until it returns something truthy; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message}")
        time.sleep(0.05)


@pytest.fixture
def lines() -> Iterator[list[str]]:
    """Every line logged to the function logger (START/END/REPORT, handler output) while
    the test runs, in order."""
    captured: list[str] = []

    class Capture(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            captured.append(record.getMessage())

    logger, handler = logging.getLogger(FUNCTION_LOGGER), Capture()
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield captured
    logger.removeHandler(handler)
    logger.setLevel(level)


def child_processes() -> dict[int, str]:
    """Child processes of this test process, zombies included: pid → "state command"."""
    found: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        command = stat[stat.find("(") + 1 : stat.rfind(")")]
        state, ppid = stat[stat.rfind(")") + 1 :].split()[:2]
        if int(ppid) == os.getpid():
            found[int(entry.name)] = f"{state} {command}"
    return found


@pytest.fixture
def no_child_left() -> Iterator[None]:
    """Fails a test that leaves child processes behind (ones that were there before it, like
    the session's Kafka broker, do not count)."""
    before = set(child_processes())
    yield
    left = {pid: what for pid, what in child_processes().items() if pid not in before}
    assert left == {}, f"processes left behind: {left}"


class Service:
    """One `streamfn run CONFIG` process with its output in files."""

    def __init__(
        self, config: Path, *, env: dict[str, str] | None = None, args: tuple[str, ...] = ()
    ) -> None:
        self.config = config
        self.stdout_path = config.parent / f"stdout-{time.monotonic_ns()}.log"
        self.stderr_path = config.parent / f"stderr-{time.monotonic_ns()}.log"
        self._env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self._args = args
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Service:
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "streamfn", "run", str(self.config), *self._args],
                stdout=out,
                stderr=err,
                env=self._env,
                cwd=self.config.parent,
            )
        return self

    @property
    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace")

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def wait_started(self, timeout: float = 30.0) -> None:
        def started() -> bool:
            assert self.process is not None
            if self.process.poll() is not None:
                raise AssertionError(f"streamfn exited {self.process.returncode}:\n{self.stderr}")
            return "streamfn is running" in self.stderr

        wait_for(started, timeout=timeout, message="streamfn to start")

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def terminate(self, timeout: float = 30.0) -> int:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout)

    def close(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)


@pytest.fixture(params=["python", "inline"])
def function_runtime(request: pytest.FixtureRequest) -> str:
    """Runs a test once per runtime: both must pass the same pipelines."""
    return str(request.param)


@pytest.fixture
def service() -> Iterator[Callable[..., Service]]:
    started: list[Service] = []

    def start(config: Path, **kwargs: object) -> Service:
        running = Service(config, **kwargs).start()  # type: ignore[arg-type]
        started.append(running)
        return running

    yield start
    for running in started:
        running.close()
