"""The messages between the engine, the template process and the workers (msgpack).

Two channels, both ``AF_UNIX`` stream sockets carrying frames — a 4-byte big-endian length
and one msgspec-encoded msgpack message (never pickle: a worker runs untrusted code, and a
message it sends is only ever data):

- **control** (engine ↔ template): :class:`Spawn` and :class:`Kill` go down; a
  :class:`Spawn` carries the new environment's file descriptors as ``SCM_RIGHTS`` on the
  same ``sendmsg``. :class:`Hello`, :class:`Spawned` and :class:`Exited` come up.
- **worker** (engine ↔ one ``python`` environment): the worker says :class:`Ready` or
  :class:`InitFailed` once, then answers each :class:`Invoke` with one :class:`Done`.
  An invocation crosses as one frame whatever its size (a batch of 500 records is one
  message).

Frame bodies are limited to :data:`MAX_FRAME` bytes (Lambda's 6 MB payloads with room to
spare); a larger length is a broken peer.
"""

from __future__ import annotations

import struct
from typing import Literal

import msgspec

MAX_FRAME = 64 * 1024 * 1024
HEADER = struct.Struct(">I")


class _Message(msgspec.Struct, frozen=True, kw_only=True, tag=True, array_like=True):
    pass


# control channel, engine → template


class Spawn(_Message, frozen=True):
    """Fork an environment. Descriptors sent with it, in order: the output pipe's write end
    (becomes the child's stdout and stderr), then for ``kind="python"`` the worker socket."""

    env_id: int
    kind: Literal["python", "exec"]
    code_dir: str
    environ: dict[str, str]
    tmp_dir: str
    memory_mb: int
    storage_mb: int
    handler: str = ""
    """``python``: ``module:attr``."""
    argv: tuple[str, ...] = ()
    """``exec``: the program and its arguments."""


class Kill(_Message, frozen=True):
    """SIGKILL the environment's process group, if it has not been reaped yet."""

    pid: int


# control channel, template → engine


class Hello(_Message, frozen=True):
    pid: int
    storage: str
    """How /tmp is limited in the environments: ``tmpfs`` or ``rlimit``."""


class Spawned(_Message, frozen=True):
    env_id: int
    pid: int
    error: str | None = None
    """Why the fork failed; ``pid`` is 0 then."""


class Exited(_Message, frozen=True):
    pid: int
    returncode: int
    """As :attr:`subprocess.Popen.returncode`: the exit status, or minus the signal."""
    max_rss_kb: int


# worker channel


class Ready(_Message, frozen=True):
    init_ms: float


class InitFailed(_Message, frozen=True):
    error_type: str
    message: str


class Invoke(_Message, frozen=True):
    request_id: str
    payload: bytes
    remaining_ms: int
    invoked_function_arn: str
    log_stream_name: str
    trace_id: str = ""
    """The X-Ray trace header (``_X_AMZN_TRACE_ID``); empty: none."""


class Done(_Message, frozen=True):
    outcome: str
    """:class:`~streamfn.types.Outcome` value."""
    payload: bytes
    error_type: str | None
    log_error: bool
    """Whether the payload is an error object to log as ``[ERROR]`` lines."""
    max_rss_kb: int
    replace: bool
    """The environment exits after this message (out of memory, ``sys.exit``)."""


ControlDown = Spawn | Kill
ControlUp = Hello | Spawned | Exited
WorkerUp = Ready | InitFailed | Done

_ENCODER = msgspec.msgpack.Encoder()


def frame(message: _Message) -> bytes:
    """One message as a length-prefixed frame."""
    buffer = bytearray(HEADER.size)
    _ENCODER.encode_into(message, buffer, HEADER.size)
    HEADER.pack_into(buffer, 0, len(buffer) - HEADER.size)
    return bytes(buffer)


def body_length(header: bytes) -> int:
    (length,) = HEADER.unpack(header)
    if length > MAX_FRAME:
        raise ValueError(f"frame of {length} bytes exceeds the limit of {MAX_FRAME}")
    return int(length)


class FrameBuffer:
    """Splits a byte stream into frames (for the template, which reads what arrives)."""

    def __init__(self) -> None:
        self._data = bytearray()

    def feed(self, data: bytes) -> None:
        self._data += data

    def frames(self) -> list[bytes]:
        out: list[bytes] = []
        while len(self._data) >= HEADER.size:
            length = body_length(bytes(self._data[: HEADER.size]))
            end = HEADER.size + length
            if len(self._data) < end:
                break
            out.append(bytes(self._data[HEADER.size : end]))
            del self._data[:end]
        return out


control_down = msgspec.msgpack.Decoder(ControlDown)
control_up = msgspec.msgpack.Decoder(ControlUp)
worker_down = msgspec.msgpack.Decoder(Invoke)
worker_up = msgspec.msgpack.Decoder(WorkerUp)
