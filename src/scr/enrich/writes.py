"""The enricher's writes straight into the store (``scr enrich backfill``, tests): each in a
transaction of its own. The server's enricher writes through the one writer instead
(``scr.serve.enrich.RemoteWrites``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from scr.enrich.status import STATE_NAME
from scr.log.commit import utc_now
from scr.store.protocol import Store, Transaction
from scr.store.records import BACKFILL_ANSWERED, VectorRow

T = TypeVar("T")


class LocalWrites:
    def __init__(self, store: Store) -> None:
        self.store = store

    def _write(self, write: Callable[[Transaction], T]) -> T:
        tx = self.store.writer()
        try:
            tx.begin(durable=True)
            result = write(tx)
            tx.commit()
            return result
        except BaseException:
            tx.rollback()
            raise
        finally:
            tx.close()

    async def start(self, head: int) -> None:
        self._write(lambda tx: self.store.vectors.start(tx, head))

    async def add(self, rows: list[VectorRow], after_seq: int, seq: int, backfill: bool) -> bool:
        vectors = self.store.vectors
        add: Any = vectors.add_backfill if backfill else vectors.add
        return bool(self._write(lambda tx: add(tx, rows, after_seq, seq)))

    async def report(self, error: str | None) -> None:
        state = "active" if error is None else "failing"
        self._write(lambda tx: self.store.set_destination_state(tx, STATE_NAME, state, error or "",
                                                                utc_now()))

    async def answer(self, asked: int) -> None:
        self._write(lambda tx: self.store.set_cursor(tx, BACKFILL_ANSWERED, asked))

    def clear(self, head: int) -> None:
        """Every vector deleted; the enricher goes on from ``head``, the backfill from 0."""
        self._write(lambda tx: self.store.vectors.clear(tx, head))
