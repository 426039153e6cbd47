"""The ``context`` object handed to handlers, attribute for attribute as on AWS.

Modelled on AWS's Python runtime interface client (``awslambdaric/lambda_context.py``), so
code that reads it — directly or through AWS Lambda Powertools — sees the same types:

- ``memory_limit_in_mb`` and ``function_version`` are strings (AWS reads them from
  environment variables), ``memory_limit_in_mb == "128"``;
- ``identity`` is a :class:`CognitoIdentity` whose fields are ``None`` when the caller had
  no Cognito identity (never ``None`` itself); ``client_context`` is ``None`` unless the
  caller sent one (``X-Amz-Client-Context``);
- ``get_remaining_time_in_millis()`` counts down to the invocation's deadline on the
  monotonic clock passed in, whole milliseconds, never below 0. It is safe to call from the
  handler's worker thread.
"""

from __future__ import annotations

import sys
import time
import uuid
from collections.abc import Mapping
from typing import Any

from streamfn.clock import Clock


class CognitoIdentity:
    __slots__ = ("cognito_identity_id", "cognito_identity_pool_id")

    def __init__(
        self, cognito_identity_id: str | None = None, cognito_identity_pool_id: str | None = None
    ) -> None:
        self.cognito_identity_id = cognito_identity_id
        self.cognito_identity_pool_id = cognito_identity_pool_id


class Client:
    __slots__ = (
        "app_package_name",
        "app_title",
        "app_version_code",
        "app_version_name",
        "installation_id",
    )

    def __init__(self, fields: Mapping[str, Any]) -> None:
        self.installation_id: Any = fields.get("installation_id")
        self.app_title: Any = fields.get("app_title")
        self.app_version_name: Any = fields.get("app_version_name")
        self.app_version_code: Any = fields.get("app_version_code")
        self.app_package_name: Any = fields.get("app_package_name")


class ClientContext:
    """``context.client_context``: the decoded ``X-Amz-Client-Context`` of a sync invoke."""

    __slots__ = ("client", "custom", "env")

    def __init__(self, fields: Mapping[str, Any]) -> None:
        client = fields.get("client")
        self.client = Client(client) if isinstance(client, Mapping) else None
        self.custom: Any = fields.get("custom")
        self.env: Any = fields.get("env")


class LambdaContext:
    """One invocation's context. Built by the runtime; handlers only read it."""

    def __init__(
        self,
        *,
        aws_request_id: str,
        function_name: str,
        invoked_function_arn: str,
        memory_limit_in_mb: int,
        log_stream_name: str,
        deadline: float,
        clock: Clock,
        function_version: str = "$LATEST",
        identity: CognitoIdentity | None = None,
        client_context: ClientContext | None = None,
        tenant_id: str | None = None,
    ) -> None:
        self.aws_request_id = aws_request_id
        self.function_name = function_name
        self.function_version = function_version
        self.invoked_function_arn = invoked_function_arn
        self.memory_limit_in_mb = str(memory_limit_in_mb)
        self.log_group_name = f"/aws/lambda/{function_name}"
        self.log_stream_name = log_stream_name
        self.identity = identity if identity is not None else CognitoIdentity()
        self.client_context = client_context
        self.tenant_id = tenant_id
        self._deadline = deadline
        self._clock = clock

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - self._clock.monotonic()) * 1000))

    def log(self, message: str) -> None:
        """AWS's ``context.log``: write ``message`` as it is (no newline added)."""
        sys.stdout.write(str(message))

    def __repr__(self) -> str:
        return (
            f"LambdaContext([aws_request_id={self.aws_request_id},"
            f"log_group_name={self.log_group_name},log_stream_name={self.log_stream_name},"
            f"function_name={self.function_name},memory_limit_in_mb={self.memory_limit_in_mb},"
            f"function_version={self.function_version},"
            f"invoked_function_arn={self.invoked_function_arn}])"
        )


def log_stream_name(now: float, version: str = "$LATEST") -> str:
    """A new environment's log stream, e.g. ``2020/01/31/[$LATEST]3893...283c``.

    ``now`` is wall-clock seconds (the clock's ``time()``); the date is UTC.
    """
    return f"{time.strftime('%Y/%m/%d', time.gmtime(now))}/[{version}]{uuid.uuid4().hex}"
