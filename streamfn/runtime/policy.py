"""What the runtimes are told: one frozen spec per function and the service-level limits.

A :class:`RuntimePolicy` is built once, at the edge, from the decoded config
(:func:`streamfn.policies.runtime_policy`), so nothing under :mod:`streamfn.runtime` reads
``streamfn.toml``'s schema. Paths are already resolved against the config file's directory
and cross-field checks (provisioned environments within ``max_concurrency``) have been
made: a runtime takes a policy as given.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import msgspec

from streamfn.runtime.base import function_arn

RuntimeKind = Literal["python", "inline", "provided"]
LogFormat = Literal["Text", "JSON"]
ApplicationLogLevel = Literal["TRACE", "DEBUG", "INFO", "WARN", "ERROR", "FATAL"]
SystemLogLevel = Literal["DEBUG", "INFO", "WARN"]

RESERVED_VARIABLES = frozenset(
    {
        "_HANDLER",
        "_X_AMZN_TRACE_ID",
        "AWS_DEFAULT_REGION",
        "AWS_REGION",
        "AWS_EXECUTION_ENV",
        "AWS_LAMBDA_FUNCTION_NAME",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
        "AWS_LAMBDA_FUNCTION_VERSION",
        "AWS_LAMBDA_INITIALIZATION_TYPE",
        "AWS_LAMBDA_LOG_GROUP_NAME",
        "AWS_LAMBDA_LOG_STREAM_NAME",
        "AWS_LAMBDA_LOG_FORMAT",
        "AWS_LAMBDA_LOG_LEVEL",
        "AWS_ACCESS_KEY",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_LAMBDA_RUNTIME_API",
        "LAMBDA_TASK_ROOT",
        "LAMBDA_RUNTIME_DIR",
        "TZ",
    }
)
"""Lambda's reserved environment variables ("Defined runtime environment variables"): a
function's ``environment`` may not set them (the config rejects them; the runtimes' values
win). The credential names are reserved on AWS because the execution role supplies
them; ``inherit_environment`` may still pass the engine's."""


class FunctionSpec(msgspec.Struct, frozen=True, kw_only=True):
    """Everything a runtime needs to run one function's environments."""

    name: str
    handler: str
    """``python``/``inline``: a form of :func:`streamfn.runtime.handlers.parse_handler`
    (``lambda_function.lambda_handler``, ``pkg/mod.fn``, ``module:fn``); ``provided``:
    free-form, handed to the bootstrap as ``_HANDLER``."""
    code_dir: Path
    """Put on ``sys.path`` to import the handler; the working directory of environments."""
    runtime: RuntimeKind = "python"
    timeout: int = 3
    """Seconds."""
    memory_size: int = 128
    """MB."""
    environment: dict[str, str] = {}
    inherit_environment: tuple[str, ...] = ()
    provisioned_concurrency: int = 0
    keep_warm: float = 300.0
    ephemeral_storage: int = 512
    """MB of /tmp per environment."""
    bootstrap: Path | None = None
    """``provided``: the executable to run (absolute)."""
    log_format: LogFormat = "Text"
    """AWS's ``LoggingConfig.LogFormat``: ``JSON`` makes application and platform log
    lines JSON records and enables the two levels below (ignored with ``Text``)."""
    application_log_level: ApplicationLogLevel = "INFO"
    """``LoggingConfig.ApplicationLogLevel``: ``AWS_LAMBDA_LOG_LEVEL``; lines below it are
    dropped."""
    system_log_level: SystemLogLevel = "INFO"
    """``LoggingConfig.SystemLogLevel``: ``WARN`` drops the platform records."""


class RuntimePolicy(msgspec.Struct, frozen=True, kw_only=True):
    """The functions a runtime runs, and the limits it runs them under."""

    functions: dict[str, FunctionSpec]
    max_concurrency: int = 64
    """Environments (and inline sync-handler threads) at most, all functions together."""
    region: str = "local"
    account: str = "000000000000"

    def only(self, *kinds: RuntimeKind) -> RuntimePolicy:
        """The same policy for the functions of the given runtime kinds only."""
        functions = {n: f for n, f in self.functions.items() if f.runtime in kinds}
        return msgspec.structs.replace(self, functions=functions)

    def arn(self, function: str, qualifier: str | None = None) -> str:
        """The function's ARN, as ``context.invoked_function_arn`` shows it."""
        return function_arn(function, region=self.region, account=self.account, qualifier=qualifier)
