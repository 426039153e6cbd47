"""Starting one environment: its variables, its /tmp, its descriptors, its fork.

:func:`launch` makes the environment's /tmp directory, builds its variables and the
:class:`~streamfn.runtime.process.protocol.Spawn` message, and has the template fork it:

- ``python``: a socket pair for the worker channel and a pipe for its output; the worker
  ends go to the template with the message (``SCM_RIGHTS``), the engine keeps the others;
- ``provided``: see :func:`streamfn.runtime.runtime_api.start_provided`.

The environment is returned forked but not initialised (the pool waits for that, with
its deadline). Variables, in increasing precedence: ``PATH`` (this interpreter's directory
first, then the system's) and ``LANG``; the engine's variables named in
``inherit_environment``; the function's ``environment``; Lambda's reserved variables,
which no configuration overrides. Nothing else of the engine's environment gets through.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import sys
from dataclasses import dataclass
from pathlib import Path

import anyio.abc

from streamfn.clock import Clock
from streamfn.runtime.context import log_stream_name
from streamfn.runtime.envelope import VERSION, Style
from streamfn.runtime.policy import FunctionSpec
from streamfn.runtime.process.environment import Environment, InitError, WorkerEnvironment
from streamfn.runtime.process.forkserver import ForkServer
from streamfn.runtime.process.output import OutputReader
from streamfn.runtime.process.protocol import Spawn

SYSTEM_PATH = "/usr/local/bin:/usr/bin:/bin"
PYTHON_RUNTIME_API = "127.0.0.1:9001"
RUNTIME_DIR = str(Path(__file__).resolve().parent.parent)
"""``LAMBDA_RUNTIME_DIR`` of ``python`` environments: the runtime's code (streamfn.runtime)."""


@dataclass(frozen=True, slots=True)
class Launch:
    """What a new environment is for."""

    env_id: int
    function: str
    config: FunctionSpec
    region: str
    base_dir: Path
    provisioned: bool


async def launch(
    server: ForkServer, what: Launch, *, clock: Clock, log: logging.Logger
) -> Environment:
    """Fork a new environment. Raises InitError when the fork fails, TemplateError when
    the template dies before it has forked."""
    tmp_dir = what.base_dir / f"{what.function}-{what.env_id}"
    tmp_dir.mkdir(mode=0o700)
    try:
        return await _fork(server, what, tmp_dir, clock=clock, log=log)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp_dir.rmdir()  # nothing has run in it
        raise


async def _fork(
    server: ForkServer, what: Launch, tmp_dir: Path, *, clock: Clock, log: logging.Logger
) -> Environment:
    stream = log_stream_name(clock.time(), VERSION)
    spawn = Spawn(
        env_id=what.env_id,
        kind="python",
        handler=what.config.handler,
        code_dir=str(what.config.code_dir),
        environ=environ(what, tmp_dir, stream),
        tmp_dir=str(tmp_dir),
        memory_mb=what.config.memory_size,
        storage_mb=what.config.ephemeral_storage,
    )
    if what.config.runtime == "provided":
        from streamfn.runtime.runtime_api import start_provided

        bootstrap = str(what.config.bootstrap or what.config.code_dir / "bootstrap")
        return await start_provided(
            spawn,
            server,
            clock=clock,
            bootstrap=bootstrap,
            output=lambda fd: output_reader(fd, what.config, log),
        )
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    out_r, out_w = os.pipe()
    try:
        pid, exit = await server.spawn(spawn, [out_w, theirs.fileno()])
    except BaseException as exc:
        ours.close()
        os.close(out_r)
        if isinstance(exc, OSError):
            raise InitError("Runtime.Unknown", str(exc)) from exc
        raise
    finally:
        theirs.close()
        os.close(out_w)
    return WorkerEnvironment(
        await anyio.abc.UNIXSocketStream.from_socket(ours),
        env_id=what.env_id,
        function=what.function,
        pid=pid,
        exit=exit,
        output=output_reader(out_r, what.config, log),
        tmp_dir=tmp_dir,
        server=server,
        provisioned=what.provisioned,
        log_stream_name=stream,
    )


def output_reader(fd: int, config: FunctionSpec, log: logging.Logger) -> OutputReader:
    """The reader of an environment's output pipe (read end ``fd``)."""
    level = Style.of(config).min_application_level
    return OutputReader(fd, log=log, function=config.name, min_level=level)


def environ(what: Launch, tmp_dir: Path, stream: str) -> dict[str, str]:
    """The environment variables of a new environment (see the module docstring)."""
    config = what.config
    variables = {
        "PATH": os.pathsep.join((os.path.dirname(sys.executable), SYSTEM_PATH)),
        "LANG": "C.UTF-8",
    }
    variables.update({k: os.environ[k] for k in config.inherit_environment if k in os.environ})
    variables.update(config.environment)
    variables.update(
        {
            "AWS_LAMBDA_FUNCTION_NAME": what.function,
            "AWS_LAMBDA_FUNCTION_VERSION": VERSION,
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(config.memory_size),
            "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{what.function}",
            "AWS_LAMBDA_LOG_STREAM_NAME": stream,
            "AWS_LAMBDA_INITIALIZATION_TYPE": (
                "provisioned-concurrency" if what.provisioned else "on-demand"
            ),
            "AWS_REGION": what.region,
            "AWS_DEFAULT_REGION": what.region,
            "_HANDLER": handler_variable(config),
            "LAMBDA_TASK_ROOT": str(config.code_dir),
            "TZ": ":UTC",
            "TMPDIR": str(tmp_dir),
        }
    )
    if config.log_format == "JSON":
        variables["AWS_LAMBDA_LOG_FORMAT"] = "JSON"
        variables["AWS_LAMBDA_LOG_LEVEL"] = config.application_log_level
    if config.runtime == "python":
        version = f"{sys.version_info[0]}.{sys.version_info[1]}"
        variables["AWS_EXECUTION_ENV"] = f"AWS_Lambda_python{version}"
        # AWS's address of the Runtime API; the worker gets its invocations over its
        # socket, so nothing answers there (code that only checks for it sees Lambda)
        variables["AWS_LAMBDA_RUNTIME_API"] = PYTHON_RUNTIME_API
        variables["LAMBDA_RUNTIME_DIR"] = RUNTIME_DIR
    else:  # provided: AWS_LAMBDA_RUNTIME_API is the environment's own endpoint
        bootstrap = config.bootstrap or config.code_dir / "bootstrap"
        variables["LAMBDA_RUNTIME_DIR"] = str(bootstrap.parent)
    return variables


def handler_variable(config: FunctionSpec) -> str:
    """``_HANDLER``: the handler setting as written (``provided``: free-form, for the
    bootstrap to read); streamfn's ``module:function`` is shown in AWS's form."""
    if config.runtime == "provided" or ":" not in config.handler:
        return config.handler
    module, _, attr = config.handler.partition(":")
    return f"{module}.{attr}"
