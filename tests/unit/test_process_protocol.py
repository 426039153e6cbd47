"""The engine ↔ template ↔ worker messages: framing, decoding, and how endings are worded."""

from __future__ import annotations

import msgspec
import pytest

from streamfn.runtime.process.environment import crash_reply, exit_reason
from streamfn.runtime.process.protocol import (
    HEADER,
    MAX_FRAME,
    Done,
    Exited,
    FrameBuffer,
    Hello,
    InitFailed,
    Invoke,
    Kill,
    Ready,
    Spawn,
    Spawned,
    body_length,
    control_down,
    control_up,
    frame,
    worker_down,
    worker_up,
)
from streamfn.types import Outcome

SPAWN = Spawn(
    env_id=7,
    kind="python",
    code_dir="/code",
    environ={"AWS_REGION": "local"},
    tmp_dir="/tmp/x",
    memory_mb=128,
    storage_mb=512,
    handler="app:handler",
)
INVOKE = Invoke(
    request_id="r1",
    payload=b'{"records": [1, 2, 3]}',
    remaining_ms=3000,
    invoked_function_arn="arn:aws:lambda:local:000000000000:function:f",
    log_stream_name="2024/01/01/[$LATEST]abc",
)
DONE = Done(
    outcome="Success",
    payload=b"{}",
    error_type=None,
    log_error=False,
    max_rss_kb=20_000,
    replace=False,
)


@pytest.mark.parametrize(
    ("message", "decoder"),
    [
        (SPAWN, control_down),
        (Kill(pid=42), control_down),
        (Hello(pid=1, storage="tmpfs"), control_up),
        (Spawned(env_id=7, pid=42), control_up),
        (Spawned(env_id=7, pid=0, error="fork failed"), control_up),
        (Exited(pid=42, returncode=-9, max_rss_kb=1024), control_up),
        (Ready(init_ms=4.5), worker_up),
        (InitFailed(error_type="Runtime.ImportModuleError", message="No module"), worker_up),
        (DONE, worker_up),
        (INVOKE, worker_down),
    ],
)
def test_every_message_round_trips_through_one_frame(
    message: msgspec.Struct, decoder: msgspec.msgpack.Decoder[object]
) -> None:
    data = frame(message)
    assert body_length(data[: HEADER.size]) == len(data) - HEADER.size
    assert decoder.decode(data[HEADER.size :]) == message


def test_a_batch_is_one_frame_whatever_its_size() -> None:
    big = msgspec.structs.replace(INVOKE, payload=b"x" * (6 * 1024 * 1024))
    data = frame(big)
    assert len(data) < 6 * 1024 * 1024 + 512
    assert worker_down.decode(data[HEADER.size :]).payload == big.payload


def test_frames_are_split_out_of_a_byte_stream_however_it_arrives() -> None:
    stream = frame(SPAWN) + frame(Kill(pid=1)) + frame(Kill(pid=2))
    buffer, seen = FrameBuffer(), []
    for index in range(len(stream)):
        buffer.feed(stream[index : index + 1])
        seen.extend(control_down.decode(body) for body in buffer.frames())
    assert seen == [SPAWN, Kill(pid=1), Kill(pid=2)]


def test_an_oversized_frame_is_a_broken_peer() -> None:
    with pytest.raises(ValueError, match="exceeds"):
        body_length(HEADER.pack(MAX_FRAME + 1))


def test_messages_never_carry_pickles() -> None:
    with pytest.raises(msgspec.ValidationError):
        worker_up.decode(msgspec.msgpack.encode(["Done", "not", "enough"]))


@pytest.mark.parametrize(
    ("returncode", "reason"),
    [
        (3, "exit status 3"),
        (0, "exit status 0"),
        (-11, "signal: segmentation fault"),
        (-9, "signal: killed"),
        (-6, "signal: aborted"),
        (None, "unknown"),
    ],
)
def test_exit_reasons_are_worded_as_aws_words_them(returncode: int | None, reason: str) -> None:
    assert exit_reason(returncode) == reason


def test_a_crash_is_a_runtime_exit_error() -> None:
    reply = crash_reply("r1", "signal: killed", 2048)
    assert reply.outcome is Outcome.CRASHED and reply.replace
    assert reply.error_type == "Runtime.ExitError"
    assert msgspec.json.decode(reply.payload) == {
        "errorType": "Runtime.ExitError",
        "errorMessage": "RequestId: r1 Error: Runtime exited with error: signal: killed",
    }
