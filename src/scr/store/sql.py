"""One SQL for both stores: statements written in SQLite's question-mark style.

Tables both stores keep alike (the ledger's trees and checkpoints, ``scr.ledger``; pending
spans, ``scr.store.spans``; archive segments, ``scr.store.segments``) are written once, with the
upserts both databases read alike (``ON CONFLICT``). A SQLite connection is used as it is;
``PgSql`` gives a psycopg connection the same two methods, turning each ``?`` into ``%s``.
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

    @property
    def rowcount(self) -> int: ...
    def fetchone(self) -> Any: ...
    def fetchall(self) -> list[Any]: ...
    def fetchmany(self, size: int) -> list[Any]: ...


class Sql(Protocol):
    """A connection the tree and checkpoint code runs its statements on."""

    def execute(self, sql: str, params: Sequence[Any] = ..., /) -> Rows: ...
    def executemany(self, sql: str, rows: Sequence[Sequence[Any]], /) -> Rows: ...


@functools.lru_cache(maxsize=256)
def _psycopg_text(sql: str) -> bytes:
    return sql.replace("?", "%s").encode()  # the statements here hold no literal question mark


class PgSql:
    """A psycopg connection seen as ``Sql``."""

    def __init__(self, conn: psycopg.Connection[tuple[Any, ...]]) -> None:
        self.conn = conn

    def execute(self, sql: str, params: Sequence[Any] = (), /) -> Rows:
        return self.conn.execute(_psycopg_text(sql), params)

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]], /) -> Rows:
        cursor = self.conn.cursor()  # left open: a closed cursor forgets its rowcount
        cursor.executemany(_psycopg_text(sql), rows)
        return cursor  # rowcount: every row's changes summed


def sql_of(tx: Transaction) -> Sql:
    """The connection of the writer's open transaction, on either store."""
    if isinstance(tx, SqliteWriter):
        return tx.conn
    from scr.store.postgres import PostgresWriter

    if isinstance(tx, PostgresWriter):
        return PgSql(tx.conn)
    raise TypeError(f"no SQL connection in {type(tx).__name__}")
