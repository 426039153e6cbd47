"""An environment's stdout and stderr, turned into function log lines.

Both streams of an environment share one pipe (so their lines interleave as written). The
engine reads it as it fills — a handler that prints a lot is never blocked by a full pipe —
and logs each line to the function logger as ``<timestamp>\\t<request id>\\t<line>``, the
timestamp in AWS's form (``2024-01-01T00:00:00.000Z``, UTC, from the clock). Lines written
outside an invocation (at init, or by a thread the handler left running) carry no request
id: ``<timestamp>\\t<line>``.

A worker writes its output before it sends its answer, so when the answer arrives every
byte of that invocation is already in the pipe: :meth:`OutputReader.drain` reads what is
there, without waiting, and logs the unfinished last line, before the runtime logs END. A
line longer than :data:`MAX_LINE` is cut into pieces (CloudWatch's limit on one event is
256 KB), so a handler cannot grow the engine's memory by never writing a newline.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time

import anyio

from streamfn.clock import Clock

MAX_LINE = 256 * 1024


class OutputReader:
    def __init__(self, fd: int, *, log: logging.Logger, clock: Clock) -> None:
        os.set_blocking(fd, False)
        self.request_id: str | None = None
        self._fd: int | None = fd
        self._log = log
        self._clock = clock
        self._partial = bytearray()

    async def run(self) -> None:
        """Read until the last writer has gone (or the caller cancels); the owner's task."""
        with contextlib.suppress(anyio.ClosedResourceError):
            while self._fd is not None:
                await anyio.wait_readable(self._fd)
                if self._read() is False:
                    return

    def drain(self) -> None:
        """Log what is in the pipe now, and the unfinished last line (an invocation ends)."""
        self._read()
        if self._partial:
            self._emit(bytes(self._partial))
            self._partial.clear()

    def close(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            with contextlib.suppress(OSError):
                self.drain()
            anyio.notify_closing(fd)
            os.close(fd)

    def _read(self) -> bool | None:
        """Read what is available: False at end of input, None when nothing was there."""
        while self._fd is not None:
            try:
                data = os.read(self._fd, 1 << 16)
            except BlockingIOError:
                return None
            if not data:
                return False
            self._feed(data)
        return None

    def _feed(self, data: bytes) -> None:
        self._partial += data
        start = 0
        while True:
            end = self._partial.find(b"\n", start)
            if end < 0:
                break
            self._emit(bytes(self._partial[start:end]))
            start = end + 1
        del self._partial[:start]
        while len(self._partial) > MAX_LINE:
            self._emit(bytes(self._partial[:MAX_LINE]))
            del self._partial[:MAX_LINE]

    def _emit(self, raw: bytes) -> None:
        line = raw.rstrip(b"\r").decode("utf-8", errors="replace")
        stamp = timestamp(self._clock.time())
        if self.request_id is None:
            self._log.info(f"{stamp}\t{line}")
        else:
            self._log.info(f"{stamp}\t{self.request_id}\t{line}")


def timestamp(now: float) -> str:
    """``now`` (wall-clock seconds) as AWS prints it: ``2024-01-01T00:00:00.000Z``."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now * 1000) % 1000:03d}Z"
