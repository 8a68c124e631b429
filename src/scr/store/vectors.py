"""The session vectors' table (``session_vectors``) in both backends (``scr.enrich``).

One row per embedded event: its vector, the embedder's model and dimensions, the session and
event it belongs to, and the fields a search filters on. Rows are added by the enricher in
the transaction that moves its cursor (``VectorTable.add``: compare-and-set, as the usage
cursor), so a killed enricher's round is stored once or not at all. A row's ``key`` is never
reused (SQLite ``AUTOINCREMENT``, a PostgreSQL identity), so an approximate index that names
rows by key never mistakes a new row for a deleted one. The rows of an erased subject are
deleted in the erasure's transaction, and a round that embedded such a subject's event before
its erasure adds nothing for it (``add`` skips erased subjects).

SQLite holds vectors as float32 bytes (the approximate index is ``scr.enrich.index``);
PostgreSQL as pgvector ``vector`` with an HNSW index on 384 dimensions (``ensure_postgres``).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import msgspec

from scr.store.records import BACKFILL_CURSOR, ENRICH_CURSOR, ENRICH_START, VectorRow

ROW_COLUMNS = ("tenant", "session_id", "event_id", "seq", "source_fields", "model", "dimensions",
               "vector", "event_model", "status", "session_type", "user_key", "at_ms")

HNSW_DIMENSIONS = 384  # the PostgreSQL index's dimensions (all-MiniLM-L6-v2's); others: exact
_INDEXES = "\n".join(
    f"CREATE INDEX IF NOT EXISTS session_vectors_{name} ON session_vectors ({columns});"
    for name, columns in (("tenant", "tenant, key"), ("session", "tenant, session_id, key"),
                          ("user", "tenant, user_key"), ("model", "tenant, event_model"),
                          ("time", "tenant, at_ms"), ("status", "tenant, status, session_type"))
)


def _schema(key: str, integer: str, text: str, vector: str) -> str:
    """``CREATE TABLE`` and its indexes in a dialect's types (one column list for both)."""
    types = {"seq": integer, "dimensions": "integer", "vector": vector, "at_ms": integer}
    columns = ", ".join(f"{name} {types.get(name, text)} NOT NULL" for name in ROW_COLUMNS)
    return f"CREATE TABLE IF NOT EXISTS session_vectors (key {key}, {columns});\n{_INDEXES}\n"


SQLITE_SCHEMA = _schema("INTEGER PRIMARY KEY AUTOINCREMENT", "INTEGER", "TEXT", "BLOB")
POSTGRES_SCHEMA = (
    "CREATE EXTENSION IF NOT EXISTS vector;\n"
    + _schema("bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY", "bigint", "text", "vector")
    + f"CREATE INDEX IF NOT EXISTS session_vectors_hnsw_{HNSW_DIMENSIONS} ON session_vectors USING hnsw "
    f"((vector::vector({HNSW_DIMENSIONS})) vector_cosine_ops) WHERE dimensions = {HNSW_DIMENSIONS};\n"
)

_ERASED = ("NOT EXISTS (SELECT 1 FROM subject_keys WHERE subject_keys.tenant = {m} "
           "AND subject_keys.subject = {m} AND subject_keys.erased_at IS NOT NULL)")


@dataclass(frozen=True)
class VectorFilter:
    """What a search keeps: each set field must equal (``from_ms`` inclusive, ``to_ms``
    exclusive, on the event's ``timestamp``)."""

    model: str | None = None
    status: str | None = None
    session_type: str | None = None
    user_key: str | None = None
    from_ms: int | None = None
    to_ms: int | None = None

    @property
    def empty(self) -> bool:
        return self == VectorFilter()

    def keeps(self, row: VectorRow) -> bool:
        return ((self.model is None or row.event_model == self.model)
                and (self.status is None or row.status == self.status)
                and (self.session_type is None or row.session_type == self.session_type)
                and (self.user_key is None or row.user_key == self.user_key)
                and (self.from_ms is None or row.at_ms >= self.from_ms)
                and (self.to_ms is None or row.at_ms < self.to_ms))

    def where(self, mark: str) -> tuple[str, list[Any]]:
        """The SQL condition (after ``tenant = mark``) and its parameters."""
        clauses: list[str] = []
        params: list[Any] = []
        for column, value in (("event_model", self.model), ("status", self.status),
                              ("session_type", self.session_type), ("user_key", self.user_key)):
            if value is not None:
                clauses.append(f"{column} = {mark}")
                params.append(value)
        if self.from_ms is not None:
            clauses.append(f"at_ms >= {mark}")
            params.append(self.from_ms)
        if self.to_ms is not None:
            clauses.append(f"at_ms < {mark}")
            params.append(self.to_ms)
        return "".join(f" AND {clause}" for clause in clauses), params


class VectorTable(Protocol):
    """The session vectors of a store."""

    def add(self, tx: Any, rows: Sequence[VectorRow], after_seq: int, seq: int) -> bool:
        """Store a round's rows and move the enricher's cursor from ``after_seq`` to ``seq``
        (False, storing nothing: the cursor was elsewhere)."""

    def add_backfill(self, tx: Any, rows: Sequence[VectorRow], after_seq: int, seq: int) -> bool:
        """The backfill's rows, its cursor moved by compare-and-set."""

    def start(self, tx: Any, head: int) -> None:
        """Enrichment turned on: the enricher starts at ``head`` and the backfill's end is
        there (kept if it started before)."""

    def after(self, tenant: str | None, after_key: int, limit: int) -> list[VectorRow]:
        """The rows past ``after_key`` in key order (every tenant's when ``tenant`` is None)."""

    def by_keys(self, tenant: str, keys: Iterable[int]) -> dict[int, VectorRow]:
        """The tenant's rows of these keys (vectors left out); deleted ones are missing."""

    def of_session(self, tenant: str, session_id: str) -> VectorRow | None:
        """The session's newest row."""

    def matching_keys(self, tenant: str, keep: VectorFilter, limit: int | None = None) -> list[int]:
        """The keys of the tenant's rows the filter keeps (at most ``limit``)."""

    def counts(self, tenant: str) -> tuple[int, int]:
        """(rows, sessions) of the tenant."""

    def models(self) -> list[tuple[str, int]]:
        """The (model, dimensions) of the stored vectors."""

    def delete_subject(self, tx: Any, tenant: str, user_key: str) -> int:
        """Delete the subject's rows (an erasure); how many."""

    def clear(self, tx: Any, start_seq: int) -> None:
        """Delete every row; the enricher and backfill start again from ``start_seq`` and 0."""


def row_values(row: VectorRow) -> tuple[Any, ...]:
    return (row.tenant, row.session_id, row.event_id, row.seq,
            msgspec.json.encode(row.source_fields).decode(), row.model, row.dimensions, row.vector,
            row.event_model, row.status, row.session_type, row.user_key, row.at_ms)


def as_row(values: Sequence[Any], with_vector: bool = True) -> VectorRow:
    """A row read as ``key`` then ``ROW_COLUMNS`` (without ``vector`` unless ``with_vector``)."""
    key, *columns = values
    named = dict(zip([c for c in ROW_COLUMNS if with_vector or c != "vector"], columns, strict=True))
    return VectorRow(
        key=int(key), tenant=named["tenant"], session_id=named["session_id"],
        event_id=named["event_id"], seq=int(named["seq"]),
        source_fields=msgspec.json.decode(named["source_fields"]), model=named["model"],
        dimensions=int(named["dimensions"]), vector=bytes(named.get("vector", b"")),
        event_model=named["event_model"], status=named["status"],
        session_type=named["session_type"], user_key=named["user_key"], at_ms=int(named["at_ms"]),
    )


def _columns(without_vector: bool) -> str:
    names = [c for c in ROW_COLUMNS if not (without_vector and c == "vector")]
    return ", ".join(("key", *names))


def _insert(mark: str, vector_mark: str) -> str:
    marks = ", ".join(vector_mark if name == "vector" else mark for name in ROW_COLUMNS)
    return (f"INSERT INTO session_vectors ({', '.join(ROW_COLUMNS)}) SELECT {marks} "
            f"WHERE {_ERASED.format(m=mark)}")


def _cursor_moves(mark: str) -> tuple[str, str]:
    return (f"INSERT INTO cursors VALUES ({mark}, 0) ON CONFLICT (destination) DO NOTHING",
            f"UPDATE cursors SET seq = {mark} WHERE destination = {mark} AND seq = {mark}")


class SqliteVectors:
    """``VectorTable`` on the SQLite store: ``read`` gives the calling thread's connection,
    ``conn_of`` the writer's connection of a transaction."""

    def __init__(self, read: Any, conn_of: Any) -> None:
        self._read, self._conn_of = read, conn_of

    def _move(self, conn: sqlite3.Connection, cursor: str, after_seq: int, seq: int) -> bool:
        ensure, move = _cursor_moves("?")
        conn.execute(ensure, (cursor,))
        return bool(conn.execute(move, (seq, cursor, after_seq)).rowcount == 1)

    def _insert(self, conn: sqlite3.Connection, rows: Sequence[VectorRow]) -> None:
        conn.executemany(_insert("?", "?"),
                         [(*row_values(row), row.tenant, row.user_key) for row in rows])

    def add(self, tx: Any, rows: Sequence[VectorRow], after_seq: int, seq: int) -> bool:
        return self._add(tx, ENRICH_CURSOR, rows, after_seq, seq)

    def add_backfill(self, tx: Any, rows: Sequence[VectorRow], after_seq: int, seq: int) -> bool:
        return self._add(tx, BACKFILL_CURSOR, rows, after_seq, seq)

    def _add(self, tx: Any, cursor: str, rows: Sequence[VectorRow], after_seq: int, seq: int) -> bool:
        conn = self._conn_of(tx)
        if not self._move(conn, cursor, after_seq, seq):
            return False
        self._insert(conn, rows)
        return True

    def start(self, tx: Any, head: int) -> None:
        self._conn_of(tx).executemany(
            "INSERT INTO cursors VALUES (?, ?) ON CONFLICT (destination) DO NOTHING",
            [(ENRICH_CURSOR, head), (ENRICH_START, head), (BACKFILL_CURSOR, 0)])

    def after(self, tenant: str | None, after_key: int, limit: int) -> list[VectorRow]:
        tenant_only = "" if tenant is None else "tenant = ? AND "
        params = ([] if tenant is None else [tenant]) + [after_key, limit]
        rows = self._read().execute(
            f"SELECT {_columns(False)} FROM session_vectors WHERE {tenant_only}key > ? "
            "ORDER BY key LIMIT ?", params)
        return [as_row(row) for row in rows]

    def by_keys(self, tenant: str, keys: Iterable[int]) -> dict[int, VectorRow]:
        wanted = list(keys)
        if not wanted:
            return {}
        rows = self._read().execute(
            f"SELECT {_columns(True)} FROM session_vectors WHERE tenant = ? AND key IN "
            f"(SELECT value FROM json_each(?))", (tenant, msgspec.json.encode(wanted)))
        return {int(row[0]): as_row(row, with_vector=False) for row in rows}

    def of_session(self, tenant: str, session_id: str) -> VectorRow | None:
        row = self._read().execute(
            f"SELECT {_columns(False)} FROM session_vectors WHERE tenant = ? AND session_id = ? "
            "ORDER BY key DESC LIMIT 1", (tenant, session_id)).fetchone()
        return None if row is None else as_row(row)

    def matching_keys(self, tenant: str, keep: VectorFilter, limit: int | None = None) -> list[int]:
        where, params = keep.where("?")
        rows = self._read().execute(
            f"SELECT key FROM session_vectors WHERE tenant = ?{where} LIMIT ?",
            (tenant, *params, -1 if limit is None else limit))
        return [int(key) for (key,) in rows]

    def counts(self, tenant: str) -> tuple[int, int]:
        row = self._read().execute("SELECT count(*), count(DISTINCT session_id) FROM "
                                   "session_vectors WHERE tenant = ?", (tenant,)).fetchone()
        return int(row[0]), int(row[1])

    def models(self) -> list[tuple[str, int]]:
        rows = self._read().execute("SELECT DISTINCT model, dimensions FROM session_vectors")
        return [(model, int(dimensions)) for model, dimensions in rows]

    def delete_subject(self, tx: Any, tenant: str, user_key: str) -> int:
        return int(self._conn_of(tx).execute(
            "DELETE FROM session_vectors WHERE tenant = ? AND user_key = ?", (tenant, user_key)
        ).rowcount)

    def clear(self, tx: Any, start_seq: int) -> None:
        conn = self._conn_of(tx)
        conn.execute("DELETE FROM session_vectors")
        conn.executemany("INSERT INTO cursors VALUES (?, ?) ON CONFLICT (destination) DO UPDATE "
                         "SET seq = excluded.seq",
                         [(ENRICH_CURSOR, start_seq), (ENRICH_START, start_seq), (BACKFILL_CURSOR, 0)])


HNSW_EF_SEARCH_MAX = 1_000  # pgvector's bound on hnsw.ef_search
# pg_advisory_xact_lock key of the vectors' schema (ASCII "scrvect"), apart from migrations'
VECTORS_SCHEMA_LOCK = 0x73637276656374


def vector_text(vector: Any) -> str:
    """pgvector's text form of a float32 vector."""
    return "[" + ",".join(f"{value:.9g}" for value in vector.tolist()) + "]"  # 9 digits: exact for float32


def vector_bytes(text: str) -> bytes:
    """Float32 little-endian bytes of pgvector's text form."""
    import numpy as np

    return np.array(text.strip("[]").split(","), dtype="<f4").tobytes()


class PostgresVectors:
    """``VectorTable`` on the PostgreSQL store (pgvector). The table is made on first use
    (``ensure``), so a database without pgvector runs everything but enrichment."""

    def __init__(self, read: Any, conn_of: Any, connect: Any) -> None:
        """``connect()``: a pooled connection (a context manager), for searches and ``ensure``."""
        self._read, self._conn_of, self._connect = read, conn_of, connect
        self._ready = False

    def ensure(self) -> None:
        """Create pgvector's extension, the table and its indexes if missing."""
        if self._ready:
            return
        import psycopg

        try:
            with self._connect() as conn, conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (VECTORS_SCHEMA_LOCK,))
                conn.execute(POSTGRES_SCHEMA.encode())
        except psycopg.Error as error:
            raise RuntimeError(f"enrichment on PostgreSQL needs the pgvector extension: {error}") from None
        self._ready = True

    def _exists(self, conn: Any) -> bool:
        return bool(conn.execute("SELECT to_regclass('session_vectors') IS NOT NULL").fetchone()[0])

    def _move(self, conn: Any, cursor: str, after_seq: int, seq: int) -> bool:
        ensure, move = _cursor_moves("%s")
        conn.execute(ensure, (cursor,))
        return bool(conn.execute(move, (seq, cursor, after_seq)).rowcount == 1)

    def _insert(self, conn: Any, rows: Sequence[VectorRow]) -> None:
        import numpy as np

        values = []
        for row in rows:
            plain = list(row_values(row))
            plain[ROW_COLUMNS.index("vector")] = vector_text(np.frombuffer(row.vector, dtype="<f4"))
            values.append((*plain, row.tenant, row.user_key))
        with conn.cursor() as cur:
            cur.executemany(_insert("%s", "%s::vector"), values)

    def add(self, tx: Any, rows: Sequence[VectorRow], after_seq: int, seq: int) -> bool:
        return self._add(tx, ENRICH_CURSOR, rows, after_seq, seq)

    def add_backfill(self, tx: Any, rows: Sequence[VectorRow], after_seq: int, seq: int) -> bool:
        return self._add(tx, BACKFILL_CURSOR, rows, after_seq, seq)

    def _add(self, tx: Any, cursor: str, rows: Sequence[VectorRow], after_seq: int, seq: int) -> bool:
        self.ensure()  # committed apart, so the writer's transaction sees the table
        conn = self._conn_of(tx)
        if not self._move(conn, cursor, after_seq, seq):
            return False
        self._insert(conn, rows)
        return True

    def start(self, tx: Any, head: int) -> None:
        self.ensure()
        with self._conn_of(tx).cursor() as cur:
            cur.executemany("INSERT INTO cursors VALUES (%s, %s) ON CONFLICT (destination) DO NOTHING",
                            [(ENRICH_CURSOR, head), (ENRICH_START, head), (BACKFILL_CURSOR, 0)])

    def _columns(self, with_vector: bool) -> str:
        names = [("vector::text" if c == "vector" else c) for c in ROW_COLUMNS
                 if with_vector or c != "vector"]
        return ", ".join(("key", *names))

    def _as_row(self, values: Sequence[Any], with_vector: bool = True) -> VectorRow:
        if with_vector:  # read as pgvector's text
            at = 1 + ROW_COLUMNS.index("vector")
            values = [*values[:at], vector_bytes(values[at]), *values[at + 1:]]
        return as_row(values, with_vector)

    def after(self, tenant: str | None, after_key: int, limit: int) -> list[VectorRow]:
        self.ensure()
        tenant_only = "" if tenant is None else "tenant = %s AND "
        params = ([] if tenant is None else [tenant]) + [after_key, limit]
        rows = self._read(f"SELECT {self._columns(True)} FROM session_vectors WHERE {tenant_only}"
                          "key > %s ORDER BY key LIMIT %s", params)
        return [self._as_row(row) for row in rows]

    def by_keys(self, tenant: str, keys: Iterable[int]) -> dict[int, VectorRow]:
        wanted = list(keys)
        if not wanted:
            return {}
        self.ensure()
        rows = self._read(f"SELECT {self._columns(False)} FROM session_vectors WHERE tenant = %s "
                          "AND key = ANY(%s)", (tenant, wanted))
        return {int(row[0]): self._as_row(row, with_vector=False) for row in rows}

    def of_session(self, tenant: str, session_id: str) -> VectorRow | None:
        self.ensure()
        rows = self._read(f"SELECT {self._columns(True)} FROM session_vectors WHERE tenant = %s "
                          "AND session_id = %s ORDER BY key DESC LIMIT 1", (tenant, session_id))
        return self._as_row(rows[0]) if rows else None

    def matching_keys(self, tenant: str, keep: VectorFilter, limit: int | None = None) -> list[int]:
        self.ensure()
        where, params = keep.where("%s")
        rows = self._read(f"SELECT key FROM session_vectors WHERE tenant = %s{where} LIMIT %s",
                          (tenant, *params, limit))
        return [int(key) for (key,) in rows]

    def all_keys(self, tenant: str) -> list[int]:
        return self.matching_keys(tenant, VectorFilter())

    def counts(self, tenant: str) -> tuple[int, int]:
        self.ensure()
        (rows, sessions), = self._read("SELECT count(*), count(DISTINCT session_id) FROM "
                                       "session_vectors WHERE tenant = %s", (tenant,))
        return int(rows), int(sessions)

    def models(self) -> list[tuple[str, int]]:
        self.ensure()
        rows = self._read("SELECT DISTINCT model, dimensions FROM session_vectors")
        return [(model, int(dimensions)) for model, dimensions in rows]

    def nearest(self, tenant: str, vector: Any, count: int) -> list[tuple[int, float]]:
        """pgvector's HNSW search over the tenant's 384-dimension vectors (``hnsw.ef_search``
        raised to ``count``, at most pgvector's 1,000)."""
        self.ensure()
        if vector.shape[0] != HNSW_DIMENSIONS:
            return self.scores(tenant, vector, self.all_keys(tenant))[:count]
        query = vector_text(vector)
        cast = f"vector::vector({HNSW_DIMENSIONS})"
        with self._connect() as conn, conn.transaction():
            conn.execute("SELECT set_config('hnsw.ef_search', %s, true)",
                         (str(min(HNSW_EF_SEARCH_MAX, max(40, count))),))
            rows = conn.execute(
                f"SELECT key, 1 - ({cast} <=> %s::vector({HNSW_DIMENSIONS})) FROM session_vectors "
                f"WHERE tenant = %s AND dimensions = {HNSW_DIMENSIONS} "
                f"ORDER BY {cast} <=> %s::vector({HNSW_DIMENSIONS}) LIMIT %s",
                (query, tenant, query, count)).fetchall()
        return [(int(key), float(score)) for key, score in rows]

    def scores(self, tenant: str, vector: Any, keys: list[int]) -> list[tuple[int, float]]:
        if not keys:
            return []
        self.ensure()
        rows = self._read("SELECT key, 1 - (vector <=> %s::vector) FROM session_vectors "
                          "WHERE tenant = %s AND key = ANY(%s) ORDER BY 2 DESC",
                          (vector_text(vector), tenant, keys))
        return [(int(key), float(score)) for key, score in rows]

    def delete_subject(self, tx: Any, tenant: str, user_key: str) -> int:
        conn = self._conn_of(tx)
        if not self._exists(conn):
            return 0
        return int(conn.execute("DELETE FROM session_vectors WHERE tenant = %s AND user_key = %s",
                                (tenant, user_key)).rowcount)

    def clear(self, tx: Any, start_seq: int) -> None:
        conn = self._conn_of(tx)
        if self._exists(conn):
            conn.execute("DELETE FROM session_vectors")
        with conn.cursor() as cur:
            cur.executemany("INSERT INTO cursors VALUES (%s, %s) ON CONFLICT (destination) DO UPDATE "
                            "SET seq = excluded.seq",
                            [(ENRICH_CURSOR, start_seq), (ENRICH_START, start_seq), (BACKFILL_CURSOR, 0)])
