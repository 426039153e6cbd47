"""An environment's stdout and stderr, turned into function log lines.

Both streams of an environment share one pipe (so their lines interleave as written). The
engine reads it as it fills — a handler that prints a lot is never blocked by a full pipe —
and logs each line to the function logger **as written**, as AWS's Python runtime leaves
``print()`` output (a prefix such as ``<timestamp>\\t<request id>`` is Node.js's
``console.log`` format, not the Python runtime's): a Powertools JSON line stays one JSON
object. Each record carries the function's name and the running request id (``None``
outside an invocation) as the attributes ``function`` and ``request_id``, for a formatter
that wants to show them. With the JSON log format a line below the function's
application log level is dropped, as AWS filters it (:func:`streamfn.runtime.logs.line_level`).

A worker writes its output before it sends its answer, so when the answer arrives every
byte of that invocation is already in the pipe: :meth:`OutputReader.drain` reads what is
there, without waiting, and logs the unfinished last line, before the runtime logs END. A
line longer than :data:`MAX_LINE` is cut into pieces (CloudWatch's limit on one event is
256 KB), so a handler cannot grow the engine's memory by never writing a newline.

Reading is done in bursts of at most :data:`BURST_READS` reads: a writer as fast as the
engine (a handler's leftover thread or child printing in a loop) keeps the pipe readable
forever, and an unbounded read loop would never give the event loop back. After a burst
:meth:`OutputReader.run` waits for the pipe again, which lets every other task run; a
:meth:`~OutputReader.drain` reads one burst, which covers a full pipe (its capacity is
64 KiB by default, 1 MiB at most) — all an invocation can have left in it.
"""

from __future__ import annotations

import contextlib
import logging
import os

import anyio

from streamfn.runtime.logs import line_level

MAX_LINE = 256 * 1024
READ_SIZE = 1 << 16
BURST_READS = 16


class OutputReader:
    def __init__(
        self,
        fd: int,
        *,
        log: logging.Logger,
        function: str = "",
        min_level: int | None = None,
    ) -> None:
        """``min_level``: drop lines below this level (the JSON format's application log
        level); None keeps every line."""
        os.set_blocking(fd, False)
        self.request_id: str | None = None
        self._fd: int | None = fd
        self._log = log
        self._function = function
        self._min_level = min_level
        self._partial = bytearray()

    async def run(self) -> None:
        """Read until the last writer has gone (or the caller cancels); the owner's task."""
        with contextlib.suppress(anyio.ClosedResourceError):
            while self._fd is not None:
                await anyio.wait_readable(self._fd)
                if self._read() is False:
                    return

    def drain(self) -> None:
        """Log what is in the pipe now (one burst), and the unfinished last line (an
        invocation ends). Never blocks."""
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
        """Read what is available, one burst at most: False at end of input, else None."""
        for _ in range(BURST_READS):
            if self._fd is None:
                return None
            try:
                data = os.read(self._fd, READ_SIZE)
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
        if self._min_level is not None and line_level(line) < self._min_level:
            return
        extra = {"function": self._function, "request_id": self.request_id}
        self._log.info("%s", line, extra=extra)
