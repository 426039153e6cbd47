"""Handlers for the process-runtime tests: each returns what the test checks."""

import asyncio
import ctypes
import os
import signal
import sys
import tempfile
import time

INITIALISED_AT = time.time()
COUNT = 0


def state(event, context):
    """Module state, process and environment as the handler sees them."""
    global COUNT
    COUNT += 1
    time.sleep(event.get("seconds", 0))
    print(f"invocation {COUNT} of {os.getpid()}")
    print("second line", file=sys.stderr)
    return {
        "pid": os.getpid(),
        "count": COUNT,
        "environ": dict(os.environ),
        "tmpdir": tempfile.gettempdir(),
        "remaining_ms": context.get_remaining_time_in_millis(),
        "arn": context.invoked_function_arn,
        "memory": context.memory_limit_in_mb,
        "log_stream": context.log_stream_name,
    }


def sleep(event, context):
    started = time.time()
    time.sleep(event.get("seconds", 0))
    return {"pid": os.getpid(), "started": started, "ended": time.time(), "count": _bump()}


def exit_(event, context):
    how = event["how"]
    print(f"about to {how}")
    if how == "os._exit":
        os._exit(3)
    if how == "segfault":
        ctypes.string_at(0)
    if how == "sys.exit":
        sys.exit(2)
    return {"pid": os.getpid()}


def leave_child(event, context):
    """Fork a child that writes its pid to ``event["pid_file"]`` and sleeps a minute (after
    ``setsid()`` when ``event["setsid"]``); then end as ``event["then"]`` says: ``exit`` (the
    worker dies at once, ``os._exit(1)``) or ``return`` (the child keeps running while the
    environment is warm)."""
    pid = os.fork()
    if pid == 0:
        try:
            if event.get("setsid"):
                os.setsid()
            with open(event["pid_file"] + ".part", "w") as out:
                out.write(str(os.getpid()))
            os.rename(event["pid_file"] + ".part", event["pid_file"])
            time.sleep(60)
        finally:
            os._exit(0)
    while not os.path.exists(event["pid_file"]):
        time.sleep(0.001)
    if event["then"] == "exit":
        os._exit(1)
    return {"pid": os.getpid()}


def kill_template(event, context):
    """Kill the fork-server template this environment was forked from."""
    if event.get("kill", True):
        os.kill(os.getppid(), signal.SIGKILL)
        time.sleep(30)  # the kernel kills this worker with its parent (PR_SET_PDEATHSIG)
    return {"pid": os.getpid(), "template": os.getppid()}


def hog(event, context):
    """Allocate ``mb`` megabytes and touch them."""
    block = bytearray(event["mb"] * 1024 * 1024)
    block[::4096] = b"x" * len(block[::4096])
    return {"pid": os.getpid(), "allocated": len(block)}


def fill(event, context):
    """Write ``mb`` megabytes into one file under /tmp (TMPDIR), 16 MB at a time; a failed
    write removes the file (so that /tmp is not left full) and raises."""
    chunk = b"\0" * (16 * 1024 * 1024)
    path = os.path.join(tempfile.gettempdir(), event.get("name", "fill.bin"))
    written = 0
    try:
        with open(path, "wb") as out:
            while written < event["mb"] * 1024 * 1024:
                out.write(chunk)
                out.flush()
                written += len(chunk)
    except OSError:
        os.remove(path)
        raise
    files = sorted(os.listdir(tempfile.gettempdir()))
    return {"pid": os.getpid(), "tmpdir": tempfile.gettempdir(), "files": files}


def listing(event, context):
    return {"pid": os.getpid(), "files": sorted(os.listdir(tempfile.gettempdir()))}


async def coroutine(event, context):
    await asyncio.sleep(0)
    return {"loop": id(asyncio.get_running_loop()), "pid": os.getpid(), "count": _bump()}


def noop(event, context):
    return None


def _bump():
    global COUNT
    COUNT += 1
    return COUNT
