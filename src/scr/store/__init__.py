"""Stores behind one protocol (``scr.store.protocol.Store``): SQLite embedded, PostgreSQL shared.

``open_store`` chooses: a ``postgresql://`` URI opens the PostgreSQL store (migrating its
schema first); otherwise the SQLite database of the data folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from scr.store.protocol import Store, Transaction

if TYPE_CHECKING:
    from scr.config import StorePoolConfig

__all__ = ["Store", "Transaction", "open_store"]


def open_store(
    data_dir: Path, uri: str | None = None, partitions: int | None = None,
    pool: StorePoolConfig | None = None,
) -> Store:
    """The store named by ``uri`` (``postgresql://…``), or the data folder's SQLite one;
    ``partitions`` is the cluster's (the PostgreSQL ledger's partition column; None: the
    store's own, ``scr.store.postgres.agreed_partitions``), ``pool`` the PostgreSQL store's
    connection settings."""
    if uri:
        from scr.store.postgres import PostgresStore, is_postgres_uri

        if not is_postgres_uri(uri):
            raise ValueError("a store URI starts with postgresql:// (or postgres://)")
        return PostgresStore(uri, partitions, pool=pool)
    from scr.store.sqlite import SqliteStore

    return SqliteStore(data_dir)
