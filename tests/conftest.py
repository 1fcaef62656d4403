"""Shared fixtures for the whole test suite."""

from __future__ import annotations

import os

import pytest

# --- postgres_dsn: keep this block self-contained; other fixtures go below it. ---------------

DEFAULT_PG_DSN = "postgresql://postgres@127.0.0.1:5432/test"


@pytest.fixture(scope="session")
def postgres_dsn() -> str:
    """DSN of a reachable PostgreSQL server (env FEDERATION_TEST_PG overrides the default).

    Skips the test when the server cannot be reached within 2 s, except on CI (CI=true), where an
    unreachable server is a failure: the PostgreSQL path must not silently go untested there.
    """
    import psycopg

    dsn = os.environ.get("FEDERATION_TEST_PG") or DEFAULT_PG_DSN
    try:
        with psycopg.connect(dsn, connect_timeout=2) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        reason = f"PostgreSQL not reachable at {dsn} ({first}); set FEDERATION_TEST_PG to a reachable DSN"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    return dsn


# --- end of postgres_dsn block. -------------------------------------------------------------
