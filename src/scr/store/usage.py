"""The usage aggregates' tables (``usage_minutes``, ``usage_quarters``, ``usage_hours``) in
both backends.

One row per (tenant, minute, model, user_id, session_type, status, tier, provider): what the
usage reader (``scr.usage``) counted there. A group's rows are added with one upsert each, in
the same transaction that moves the reader's cursor, so every event is counted exactly once;
the same rows summed without user_id by quarter hour go to ``usage_quarters`` and by hour to
``usage_hours`` (``rollup_values``), which answer the queries that do not group by user: the
coarsest table whose periods the query's buckets are made of (``table_for``). Session durations are
kept apart, as histograms by (tenant, quarter hour, user_id) in ``usage_durations`` (one row
per non-empty bucket, ``scr.usage.durations``), written in the same transaction.

Money is exact in both backends: PostgreSQL keeps it as ``numeric``; SQLite keeps a decimal
string and adds it with ``usage_add_money``, a function registered on the writer's
connection (SQLite's own arithmetic is floating point). SQLite's integer ``+`` turns into a
float when it overflows 64 bits, so counters are added by ``usage_add_count``, which fails
the transaction instead (SQLite cannot hold a Python integer past 64 bits).
"""

from __future__ import annotations

import decimal
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import msgspec

from scr.store.records import (
    USAGE_COUNT_COLUMNS,
    USAGE_KEY_COLUMNS,
    USAGE_MONEY_COLUMNS,
    DurationRow,
    UsageRow,
    UsageSum,
)

# Exact decimal addition: more digits than any sum of amounts under 10**9 USD with 18
# decimals can need; a result that would round raises instead.
_EXACT = decimal.Context(prec=80, traps=[decimal.Inexact, decimal.Overflow])

ROLLUP_MINUTES = 15  # every time zone's offset today is a multiple of a quarter hour
HOUR_MINUTES = 60  # most zones' offsets are whole hours: their days and hours are made of these


@dataclass(frozen=True)
class UsageTable:
    """One table of aggregates: its name and key columns (the counters and money follow)."""

    name: str
    keys: tuple[str, ...]
    minutes: int = 1  # the period of a row: its ``minute`` is a multiple of this

    @property
    def columns(self) -> tuple[str, ...]:
        return self.keys + USAGE_COUNT_COLUMNS + USAGE_MONEY_COLUMNS

    def create(self, integer: str, text: str, counter: str, money: str, suffix: str = "") -> str:
        """``CREATE TABLE`` in a dialect's types (one column list for both stores)."""
        types = {"minute": integer, **dict.fromkeys(USAGE_COUNT_COLUMNS, counter),
                 **dict.fromkeys(USAGE_MONEY_COLUMNS, money)}
        columns = ", ".join(f"{name} {types.get(name, text)} NOT NULL" for name in self.columns)
        return (f"CREATE TABLE IF NOT EXISTS {self.name} ({columns}, "
                f"PRIMARY KEY ({', '.join(self.keys)})){suffix}")

    def upsert(self, dialect: str) -> str:
        """Insert a row, or add its counters and money to the stored one."""
        if dialect == "sqlite":
            sums = [f"{c} = usage_add_count({c}, excluded.{c})" for c in USAGE_COUNT_COLUMNS]
            sums += [f"{c} = usage_add_money({c}, excluded.{c})" for c in USAGE_MONEY_COLUMNS]
            mark = "?"
        else:
            sums = [f"{c} = {self.name}.{c} + excluded.{c}"
                    for c in USAGE_COUNT_COLUMNS + USAGE_MONEY_COLUMNS]
            mark = "%s"
        marks = ", ".join([mark] * len(self.columns))
        return (f"INSERT INTO {self.name} ({', '.join(self.columns)}) VALUES ({marks}) "
                f"ON CONFLICT ({', '.join(self.keys)}) DO UPDATE SET {', '.join(sums)}")


# What the reader counted, by minute; and the same by quarter hour and by hour without
# user_id, which answer every query not grouped by user (a month by day in UTC reads the
# hours: ~400 times fewer rows than the minutes).
MINUTES = UsageTable("usage_minutes", USAGE_KEY_COLUMNS)
_NO_USER = tuple(c for c in USAGE_KEY_COLUMNS if c != "user_id")
QUARTERS = UsageTable("usage_quarters", _NO_USER, ROLLUP_MINUTES)
HOURS = UsageTable("usage_hours", _NO_USER, HOUR_MINUTES)
ROLLUPS = (QUARTERS, HOURS)

# SQLite: integers of 64 bits (usage_add_count fails past them), money as decimal text
SQLITE_SCHEMA = "".join(t.create("INTEGER", "TEXT", "INTEGER", "TEXT", " WITHOUT ROWID;\n")
                        for t in (MINUTES, QUARTERS))
SQLITE_HOURS_SCHEMA = HOURS.create("INTEGER", "TEXT", "INTEGER", "TEXT", " WITHOUT ROWID")
# PostgreSQL: numeric counters and money, exact at any size
POSTGRES_SCHEMA = ";\n".join(t.create("bigint", "text", "numeric", "numeric") for t in (MINUTES, QUARTERS))
POSTGRES_HOURS_SCHEMA = HOURS.create("bigint", "text", "numeric", "numeric")

# Session durations: sessions by (tenant, quarter hour, user_id, histogram bucket)
_DURATIONS = ("CREATE TABLE IF NOT EXISTS usage_durations (tenant text NOT NULL, minute {integer} "
              "NOT NULL, user_id text NOT NULL, bucket integer NOT NULL, sessions {integer} NOT NULL, "
              "PRIMARY KEY (tenant, minute, user_id, bucket)){suffix}")
SQLITE_SCHEMA += _DURATIONS.format(integer="INTEGER", suffix=" WITHOUT ROWID;\n")
POSTGRES_DURATIONS_SCHEMA = _DURATIONS.format(integer="bigint", suffix="")


def _add_money(stored: str, added: str) -> str:
    return format(_EXACT.add(Decimal(stored), Decimal(added)), "f")


def _add_count(stored: int, added: int) -> int:
    return stored + added


def table_for(keys: Sequence[str], from_minute: int, bucket_minutes: int) -> UsageTable:
    """The coarsest table that can answer: no user_id, and buckets of its whole periods."""
    if "user_id" in keys:
        return MINUTES
    for table in reversed(ROLLUPS):
        if from_minute % table.minutes == 0 and bucket_minutes % table.minutes == 0:
            return table
    return MINUTES


def fill_rollup(table: UsageTable, dialect: str) -> str:
    """Fill an empty roll-up table from the quarter hours (a data folder from before it)."""
    money = "usage_money_sum({})" if dialect == "sqlite" else "SUM({})"
    keys = [f"minute - minute % {table.minutes}" if key == "minute" else key for key in table.keys]
    sums = [f"SUM({c})" for c in USAGE_COUNT_COLUMNS] + [money.format(c) for c in USAGE_MONEY_COLUMNS]
    group = ", ".join(str(n) for n in range(1, len(keys) + 1))
    return (f"INSERT INTO {table.name} ({', '.join(table.columns)}) SELECT {', '.join(keys + sums)} "
            f"FROM {QUARTERS.name} GROUP BY {group}")


def rollup_values(rows: Sequence[UsageRow], money: type[str] | type[Decimal] = str
                  ) -> list[tuple[UsageTable, list[tuple[Any, ...]]]]:
    """Each roll-up table with its rows of these minute rows, as parameter tuples (money as
    ``money``): the minute rows summed by quarter hour once, and those quarters by hour."""
    tables = []
    items: Iterable[tuple[tuple[Any, ...], list[Any]]] = _summable(rows)
    for table in ROLLUPS:  # finest first: each sums the one before
        merged = _merged(items, table.minutes)
        tables.append((table, [(*key, *sums[:-2], *(money(_plain(v)) for v in sums[-2:]))
                               for key, sums in merged.items()]))
        items = merged.items()
    return tables


def _summable(rows: Sequence[UsageRow]) -> Iterator[tuple[tuple[Any, ...], list[Any]]]:
    """Each minute row as (its keys without user_id, [its counters, its money as Decimal])."""
    user = USAGE_KEY_COLUMNS.index("user_id")
    for row in rows:
        values = msgspec.structs.astuple(row)
        keys = list(values[: len(USAGE_KEY_COLUMNS)])
        del keys[user]
        yield tuple(keys), [*values[len(USAGE_KEY_COLUMNS):-2], *(Decimal(v) for v in values[-2:])]


def _merged(items: Iterable[tuple[tuple[Any, ...], list[Any]]], minutes: int
            ) -> dict[tuple[Any, ...], list[Any]]:
    """The items summed by their keys, with ``minute`` (the second key) down to a multiple of
    ``minutes``; counters added as integers, money exactly."""
    merged: dict[tuple[Any, ...], list[Any]] = {}
    counters = len(USAGE_COUNT_COLUMNS)
    for keys, sums in items:
        key = (keys[0], keys[1] - keys[1] % minutes, *keys[2:])
        found = merged.get(key)
        if found is None:
            merged[key] = list(sums)
        else:
            for n, value in enumerate(sums):
                found[n] = _EXACT.add(found[n], value) if n >= counters else found[n] + value
    return merged


def add_sqlite_hours(conn: sqlite3.Connection) -> None:
    """Create ``usage_hours`` in a SQLite database that has none yet, filled from its quarter
    hours, in one transaction: every process opening the folder may try, one does it."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        found = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?",
                             (HOURS.name,)).fetchone()
        if found is None:
            conn.execute(SQLITE_HOURS_SCHEMA)
            conn.execute(fill_rollup(HOURS, "sqlite"))
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def prepare_sqlite_writer(conn: sqlite3.Connection) -> None:
    """Register the exact additions the upsert uses on the writer's connection."""
    conn.create_function("usage_add_money", 2, _add_money, deterministic=True)
    conn.create_function("usage_add_count", 2, _add_count, deterministic=True)


def as_values(rows: Sequence[UsageRow], money: type[str] | type[Decimal] = str) -> list[tuple[Any, ...]]:
    """The rows as parameter tuples (money as ``money``: text for SQLite, Decimal for PostgreSQL)."""
    values: list[tuple[Any, ...]] = []
    for row in rows:
        *rest, cost, estimated = msgspec.structs.astuple(row)
        values.append((*rest, money(cost), money(estimated)))
    return values


def _plain(amount: Any) -> str:
    return format(Decimal(amount), "f") if not isinstance(amount, str) else amount


class MoneySum:
    """SQLite aggregate ``usage_money_sum(text)``: the exact sum of decimal strings."""

    def __init__(self) -> None:
        self.total = Decimal(0)

    def step(self, amount: str) -> None:
        self.total = _EXACT.add(self.total, Decimal(amount))

    def finalize(self) -> str:
        return format(self.total, "f")


def prepare_sqlite_reader(conn: sqlite3.Connection) -> None:
    """Register the exact money sum that ``sums_query`` uses."""
    conn.create_aggregate("usage_money_sum", 1, MoneySum)  # type: ignore[arg-type]  # typeshed: ints only


def durations_upsert(dialect: str) -> str:
    """Insert a histogram row, or add its sessions to the stored one."""
    mark, add = ("?", "usage_add_count(sessions, excluded.sessions)") if dialect == "sqlite" else (
        "%s", "usage_durations.sessions + excluded.sessions")
    return (f"INSERT INTO usage_durations VALUES ({', '.join([mark] * 5)}) "
            f"ON CONFLICT (tenant, minute, user_id, bucket) DO UPDATE SET sessions = {add}")


def durations_values(rows: Sequence[DurationRow]) -> list[tuple[Any, ...]]:
    return [msgspec.structs.astuple(row) for row in rows]


def durations_query(mark: str) -> str:
    """Sessions by user and bucket of a tenant in quarter hours from <= minute < to
    (parameters: tenant, from minute, to minute)."""
    return ("SELECT user_id, bucket, SUM(sessions) FROM usage_durations WHERE tenant = "
            f"{mark} AND minute >= {mark} AND minute < {mark} GROUP BY user_id, bucket")


def sums_query(table: UsageTable, keys: Sequence[str], mark: str, dialect: str, tenant: bool) -> str:
    """Rows summed by tenant, bucket and the ``keys`` columns (parameters: from minute,
    bucket minutes, [tenant], from minute, to minute). Both minutes are known integers, and
    the bucket is counted from ``from``, so it is never negative (SQLite's ``/`` truncates)."""
    unknown = set(keys) - set(table.keys)
    if unknown:
        raise ValueError(f"not usage key columns: {sorted(unknown)}")
    money = "usage_money_sum({})" if dialect == "sqlite" else "SUM({})"
    number = mark if dialect == "sqlite" else f"{mark}::bigint"  # integer division, not numeric
    columns = ["tenant", f"(minute - {number}) / {number}", *keys]
    sums = [f"SUM({c})" for c in USAGE_COUNT_COLUMNS] + [money.format(c) for c in USAGE_MONEY_COLUMNS]
    where = f"{'tenant = ' + mark + ' AND ' if tenant else ''}minute >= {mark} AND minute < {mark}"
    group = ", ".join(str(n) for n in range(1, len(columns) + 1))
    return f"SELECT {', '.join(columns + sums)} FROM {table.name} WHERE {where} GROUP BY {group}"


def as_sum(values: Sequence[Any], key_count: int) -> UsageSum:
    """A row of ``sums_query`` as a ``UsageSum``."""
    tenant, bucket, *rest = values
    keys, counts, money = rest[:key_count], rest[key_count:-2], rest[-2:]
    return UsageSum(tenant, int(bucket), tuple(keys), tuple(int(c) for c in counts),
                    _plain(money[0]), _plain(money[1]))


def cursor_statements(mark: str) -> tuple[str, str]:
    """The compare-and-set of the usage cursor: (make sure the row exists, move it on)."""
    return (
        f"INSERT INTO cursors VALUES ({mark}, 0) ON CONFLICT (destination) DO NOTHING",
        f"UPDATE cursors SET seq = {mark} WHERE destination = {mark} AND seq = {mark}",
    )
