"""Shared fixtures: the anyio backend, and a fresh Postgres schema for state-store tests."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import psycopg
import pytest

POSTGRES = os.environ.get("STREAMFN_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A Postgres URL whose search_path is a fresh schema, dropped after the test. Postgres
    is required (CI has it): without it the test fails, it does not skip."""
    schema = f"streamfn_test_{uuid.uuid4().hex[:12]}"
    try:
        admin = psycopg.connect(POSTGRES, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        pytest.fail(f"Postgres is required for this test and is not reachable at {POSTGRES}: {exc}")
    try:
        yield f"{POSTGRES}?options=-csearch_path%3D{schema}"
    finally:
        admin.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        admin.close()
