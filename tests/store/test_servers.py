"""The PostgreSQL fixture itself: a real server, one fresh database per test."""

from __future__ import annotations

import psycopg
import pytest

from servers import PostgresServer


def test_each_test_gets_an_empty_database_of_its_own(postgres_server: PostgresServer) -> None:
    first, second = postgres_server.fresh_database(), postgres_server.fresh_database()
    assert first != second
    with psycopg.connect(first, autocommit=True) as conn:
        conn.execute("CREATE TABLE only_here (x int)")
    with psycopg.connect(second, autocommit=True) as conn:
        found = conn.execute("SELECT to_regclass('only_here')").fetchone()
    assert found == (None,)


def test_cut_connections_ends_the_sessions_of_one_database(postgres_server: PostgresServer) -> None:
    uri = postgres_server.fresh_database()
    with psycopg.connect(uri, autocommit=True) as conn:
        assert postgres_server.cut_connections(uri) == 1
        with pytest.raises(psycopg.OperationalError):
            conn.execute("SELECT 1")
