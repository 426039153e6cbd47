"""Shared fixtures: the anyio backend, and the process helpers integration tests use."""

from __future__ import annotations

import pytest


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
