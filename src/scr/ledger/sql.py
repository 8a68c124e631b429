"""One SQL for the tree and checkpoint tables, on SQLite and on PostgreSQL.

The ledger's trees (``scr.ledger.tiles``, ``scr.ledger.upkeep``) and checkpoints are written in
SQLite's question-mark style, with the upserts both databases read alike (``ON CONFLICT``).
A SQLite connection is used as it is; ``PgSql`` gives a psycopg connection the same two
methods, turning each ``?`` into psycopg's ``%s``. The tables are created by
``scr.ledger.tiles.create_schema`` on SQLite and by migration 11 on PostgreSQL.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any, Protocol

import psycopg

from scr.store.protocol import Transaction
from scr.store.sqlite import SqliteWriter


class Rows(Protocol):
    """The rows of one statement (a sqlite3 or psycopg cursor)."""

    def fetchone(self) -> Any: ...
    def fetchall(self) -> list[Any]: ...
    def fetchmany(self, size: int) -> list[Any]: ...


class Sql(Protocol):
    """A connection the tree and checkpoint code runs its statements on."""

    def execute(self, sql: str, params: Sequence[Any] = ..., /) -> Rows: ...
    def executemany(self, sql: str, rows: Sequence[Sequence[Any]], /) -> object: ...


@functools.lru_cache(maxsize=256)
def _psycopg_text(sql: str) -> bytes:
    return sql.replace("?", "%s").encode()  # the statements here hold no literal question mark


class PgSql:
    """A psycopg connection seen as ``Sql``."""

    def __init__(self, conn: psycopg.Connection[tuple[Any, ...]]) -> None:
        self.conn = conn

    def execute(self, sql: str, params: Sequence[Any] = (), /) -> Rows:
        return self.conn.execute(_psycopg_text(sql), params)

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]], /) -> object:
        with self.conn.cursor() as cursor:
            cursor.executemany(_psycopg_text(sql), rows)
        return None


def sql_of(tx: Transaction) -> Sql:
    """The connection of the writer's open transaction, on either store."""
    if isinstance(tx, SqliteWriter):
        return tx.conn
    from scr.store.postgres import PostgresWriter

    if isinstance(tx, PostgresWriter):
        return PgSql(tx.conn)
    raise TypeError(f"the ledger's trees cannot be kept in {type(tx).__name__}")
