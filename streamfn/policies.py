"""From decoded config to the frozen policies the parts run on: done once, at the edge.

The engine and the CLI call these; the parts themselves (:mod:`streamfn.runtime`, ...) never
import :mod:`streamfn.config`, so they can be built and tested from a policy alone.
"""

from __future__ import annotations

from streamfn.config import Config, SourceConfig
from streamfn.errors import ConfigError
from streamfn.events.dispatcher import DispatchPolicy
from streamfn.events.lifecycle import EventPolicy
from streamfn.events.mapping import EventMappingPolicy
from streamfn.events.retry import AsyncRetryPolicy
from streamfn.invoke.invoker import InvokerPolicy
from streamfn.runtime.base import function_arn
from streamfn.runtime.policy import FunctionSpec, RuntimePolicy

__all__ = [
    "dispatch_policy",
    "event_mapping_policy",
    "invoker_policy",
    "runtime_policy",
]


def runtime_policy(config: Config) -> RuntimePolicy:
    """The runtime's policy for every function of ``config``. Raises ConfigError when the
    provisioned environments of all functions exceed ``service.max_concurrency``."""
    service = config.service
    provisioned = sum(f.provisioned_concurrency for f in config.functions.values())
    if provisioned > service.max_concurrency:
        name = next(n for n, f in config.functions.items() if f.provisioned_concurrency)
        raise ConfigError(
            f"{provisioned} provisioned environments in all exceed service.max_concurrency "
            f"({service.max_concurrency})",
            file=config.path,
            path=f"functions.{name}.provisioned_concurrency",
        )
    functions = {}
    for name, function in config.functions.items():
        code_dir = config.code_dir(name)
        bootstrap = None
        if function.runtime == "provided":
            bootstrap = code_dir / (function.bootstrap or "bootstrap")
        functions[name] = FunctionSpec(
            name=name,
            handler=function.handler,
            code_dir=code_dir,
            runtime=function.runtime,
            timeout=function.timeout,
            memory_size=function.memory_size,
            environment=dict(function.environment),
            inherit_environment=function.inherit_environment,
            provisioned_concurrency=function.provisioned_concurrency,
            keep_warm=function.keep_warm,
            ephemeral_storage=function.ephemeral_storage,
            bootstrap=bootstrap,
            log_format=function.log_format,
            application_log_level=function.application_log_level or "INFO",
            system_log_level=function.system_log_level or "INFO",
        )
    return RuntimePolicy(
        functions=functions,
        max_concurrency=service.max_concurrency,
        region=service.region,
        account=service.account,
    )


# --- the async path (the async-path helper's part) ----------------------------------------


def invoker_policy(config: Config) -> InvokerPolicy:
    """The invoker's limits: ``service.max_concurrency`` and each function's
    ``reserved_concurrency`` (when set)."""
    return InvokerPolicy(
        max_concurrency=config.service.max_concurrency,
        reserved={
            name: function.reserved_concurrency
            for name, function in config.functions.items()
            if function.reserved_concurrency is not None
        },
    )


def dispatch_policy(config: Config) -> DispatchPolicy:
    """The async dispatcher's rules: every function of ``config`` (the ones this instance
    runs, so the only ones whose events it leases) with its event invoke config."""
    service = config.service
    functions = {
        name: EventPolicy(
            retry=AsyncRetryPolicy(
                maximum_retry_attempts=function.async_.maximum_retry_attempts,
                maximum_event_age=function.async_.maximum_event_age,
                retry_delay=function.async_.retry_delay,
            ),
            timeout=function.timeout,
            function_arn=function_arn(
                name, region=service.region, account=service.account, qualifier="$LATEST"
            ),
            on_success=function.async_.on_success,
            on_failure=function.async_.on_failure,
            reserved_concurrency=function.reserved_concurrency,
        )
        for name, function in config.functions.items()
    }
    return DispatchPolicy(functions=functions, max_concurrency=service.max_concurrency)


def event_mapping_policy(name: str, source: SourceConfig, config: Config) -> EventMappingPolicy:
    """The emit step's rules for the event source ``name``."""
    return EventMappingPolicy(
        name=name,
        function=source.function,
        root=str(config.root),
        idempotency_key=source.idempotency_key,
        idempotency_ttl=source.idempotency_ttl,
    )
