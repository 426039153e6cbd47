"""The Postgres state store's schema: its tables, and creating them where missing.

The tables go into the first schema of the connection's ``search_path`` (created if
needed). Every statement is idempotent (``CREATE ... IF NOT EXISTS``, ``ADD COLUMN IF NOT
EXISTS``), so an older database is brought up to :data:`SCHEMA_VERSION` by running them
all; :func:`create_schema` runs them under a transaction-level advisory lock, so instances
starting together do not race. Used by :func:`streamfn.state.postgres.open_postgres_store`.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

from streamfn.errors import StateError

__all__ = ["SCHEMA_VERSION", "create_schema"]

SCHEMA_VERSION = 2
_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS streamfn_schema (version integer NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS streamfn_queue (
        id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, function text NOT NULL,
        payload bytea NOT NULL, request_id text NOT NULL, idempotency_key text NOT NULL,
        idempotency_ttl double precision NOT NULL, enqueued_at double precision NOT NULL,
        visible_at double precision NOT NULL, leased_until double precision,
        attempts integer NOT NULL DEFAULT 0, invoke_count integer NOT NULL DEFAULT 0,
        UNIQUE (function, idempotency_key))""",
    """CREATE INDEX IF NOT EXISTS streamfn_queue_due ON streamfn_queue (visible_at, id)
        WHERE leased_until IS NULL""",
    """CREATE INDEX IF NOT EXISTS streamfn_queue_leased ON streamfn_queue (leased_until)
        WHERE leased_until IS NOT NULL""",
    """CREATE TABLE IF NOT EXISTS streamfn_idempotency (
        function text NOT NULL, key text NOT NULL,
        state text NOT NULL CHECK (state IN ('in_progress', 'completed')),
        lease_until double precision, expires_at double precision, result bytea,
        PRIMARY KEY (function, key))""",
    """CREATE INDEX IF NOT EXISTS streamfn_idempotency_expiry ON streamfn_idempotency
        (expires_at) WHERE expires_at IS NOT NULL""",
    """CREATE TABLE IF NOT EXISTS streamfn_checkpoints (
        source text NOT NULL, key text NOT NULL, value bytea NOT NULL,
        PRIMARY KEY (source, key))""",
    # version 2: lease tokens (fencing), throttle counts, the destination outbox
    "ALTER TABLE streamfn_queue ADD COLUMN IF NOT EXISTS lease_token bigint NOT NULL DEFAULT 0",
    "ALTER TABLE streamfn_queue ADD COLUMN IF NOT EXISTS throttles integer NOT NULL DEFAULT 0",
    """CREATE TABLE IF NOT EXISTS streamfn_outbox (
        id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, destination text NOT NULL,
        record bytea NOT NULL, created_at double precision NOT NULL,
        visible_at double precision NOT NULL, leased_until double precision,
        lease_token bigint NOT NULL DEFAULT 0, attempts integer NOT NULL DEFAULT 0)""",
    """CREATE INDEX IF NOT EXISTS streamfn_outbox_due ON streamfn_outbox (visible_at, id)""",
    "UPDATE streamfn_schema SET version = 2 WHERE version < 2",
)


async def create_schema(conn: psycopg.AsyncConnection[Any]) -> None:
    """Create the schema named first in ``search_path`` and the tables in it, if missing;
    refuse a schema newer than this streamfn."""
    await conn.execute("SELECT pg_advisory_xact_lock(hashtext('streamfn-schema'))")
    row = await (await conn.execute("SELECT current_setting('search_path')")).fetchone()
    first = (row[0] if row else "").split(",")[0].strip()
    if first and first != '"$user"':
        name = first[1:-1].replace('""', '"') if first.startswith('"') else first.lower()
        await conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(name)))
    for statement in _SCHEMA:
        await conn.execute(statement)
    found = await (await conn.execute("SELECT max(version) FROM streamfn_schema")).fetchone()
    version = found[0] if found else None
    if version is None:
        await conn.execute("INSERT INTO streamfn_schema (version) VALUES (%s)", (SCHEMA_VERSION,))
    elif version > SCHEMA_VERSION:
        raise StateError(
            f"state store schema version {version} is newer than this streamfn"
            f" understands ({SCHEMA_VERSION}); upgrade streamfn"
        )
