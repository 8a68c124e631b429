"""The enricher: follows the ledger from its durable cursor and embeds each event's text.

Each round reads up to ``FETCH_ENTRIES`` entries past the cursor, embeds the configured
fields of the events that have text (``scr.enrich.texts``; an event without text costs a
decode) and stores their vectors with the cursor moved past the round, in one transaction
(compare-and-set, ``VectorTable.add``): a round of an enricher killed before its write is
embedded again, one the store took is never taken twice, so the index (which follows the
store's rows by key) gets each vector once.

An embedder that fails (``EmbedderError``) leaves the cursor where it is: the enricher
records the error (``GET /v1/enrichment``'s ``last_error``), waits (doubling from
``RETRY_FIRST_S`` to ``RETRY_MAX_S``) and tries the same entries again; the lag grows
meanwhile and the error clears once a round succeeds.

A store that holds vectors of another model than the embedder's is never mixed into: the
enricher reports it and embeds nothing until ``scr enrich rebuild``.

The backfill (``backfill``) embeds what the ledger held before enrichment was turned on,
from its own cursor up to the enricher's start, by the same rounds.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

from scr.enrich.embedders import Embedder, EmbedderError
from scr.enrich.texts import text_of, vector_row
from scr.log.entry import Kind
from scr.log.tail import Opening, event_entry
from scr.metrics import Metrics
from scr.privacy.sealing import SUBJECT_PREFIX
from scr.schema import Event
from scr.store.protocol import Store
from scr.store.records import (
    BACKFILL_ANSWERED,
    BACKFILL_ASKED,
    BACKFILL_CURSOR,
    ENRICH_CURSOR,
    ENRICH_START,
    StoredEntry,
    VectorRow,
)

log = logging.getLogger("scr.enrich")
Done = TypeVar("Done")

FETCH_ENTRIES = 2_000  # ledger entries per round
TEXTS_PER_ROUND = 256  # texts embedded per round at most (about 2 s of one core)
STARVED_AFTER_S = 3.0  # no progress for this long while entries wait: the enricher is starved
RETRY_FIRST_S = 1.0
RETRY_MAX_S = 60.0


class EnrichWrites(Protocol):
    """How the enricher's results reach the store (through the writer, or directly)."""

    async def start(self, head: int) -> None:
        """Turned on: the cursor and the backfill's end at ``head`` (if not set before)."""

    async def add(self, rows: list[VectorRow], after_seq: int, seq: int, backfill: bool) -> bool:
        """The rows and the cursor's move (False: the cursor was not at ``after_seq``)."""

    async def report(self, error: str | None) -> None:
        """The embedder's last error (None: it recovered)."""

    async def answer(self, asked: int) -> None:
        """The backfills asked up to ``asked`` are done."""


def mixed_model(store: Store, embedder: Embedder) -> str | None:
    """Why the embedder's vectors would mix with the stored ones, or None."""
    for model, dimensions in store.vectors.models():  # an openai embedder's are known once it answered
        if model != embedder.model or embedder.dimensions not in (0, dimensions):
            return (f"the index holds vectors of model {model} ({dimensions} dimensions) and the "
                    f"embedder is {embedder.model} ({embedder.dimensions}): run `scr enrich rebuild`")
    return None


def embed_entries(entries: Sequence[StoredEntry], embedder: Embedder, fields: Sequence[str],
                  opener: Opening | None) -> tuple[list[VectorRow], int]:
    """The vectors of the events among ``entries`` that have text, up to ``TEXTS_PER_ROUND``
    of them, and the seq of the last entry they cover (blocking)."""
    found: list[tuple[int, str, Event, list[str], str]] = []
    covered = entries[-1].seq if entries else 0
    for stored in entries:
        if len(found) == TEXTS_PER_ROUND:
            covered = found[-1][0]
            break
        if stored.kind != Kind.SESSION_COMPLETION.value:
            continue
        decoded = event_entry(stored.entry)
        event, user_key = decoded.payload, decoded.payload.user.user_id
        if decoded.seal:  # the subject's keyed hash, as erasure and lookups by user name it
            user_key = user_key.removeprefix(SUBJECT_PREFIX)
            if opener is not None:
                event = opener.open(event, decoded.seal)
        text, sources = text_of(event, fields)
        if text:
            found.append((stored.seq, user_key, event, sources, text))
    if not found:
        return [], covered
    vectors = embedder.embed([text for *_, text in found])
    return [vector_row(seq, user, event, sources, embedder.model, vector)
            for (seq, user, event, sources, _), vector in zip(found, vectors, strict=True)], covered


@dataclass
class Enricher:
    """The vectors' writer: one per store at a time (``scr: enrich``)."""

    store: Store
    embedder: Embedder
    fields: Sequence[str]
    writes: EnrichWrites
    opener: Opening | None = None
    # the rows of a round just stored (in a worker thread): the process's indexes follow them
    on_stored: Callable[[list[VectorRow]], None] = lambda rows: None
    metrics: Metrics | None = None
    # pace(): sets the embedding thread's priority at each round (``scr.serve.enrich``)
    pace: Callable[[], None] = lambda: None
    embedding_thread: int | None = None  # the native id of the thread embedding a round
    # the one thread that embeds, and the only one paced: a paced thread of asyncio's default
    # executor went on to run the store's reads (and the index's save at stop) at its pace,
    # starved on a busy machine
    embedding: Executor = field(
        default_factory=lambda: ThreadPoolExecutor(1, thread_name_prefix="scr-embed"), repr=False)
    cursor: int = 0
    last_error: str | None = None
    _retry_s: float = field(default=0.0, repr=False)
    _progress_at: float = field(default_factory=time.monotonic, repr=False)

    async def load(self, head: int) -> None:
        """Read the cursor; when enrichment is new, start at ``head``. The cursor is a seq over
        the whole ledger: sound because no read passes a seq that could still commit (on
        PostgreSQL: the store's safe seq; ``scr.usage.reader``)."""
        cursor = await asyncio.to_thread(self.store.cursor, ENRICH_CURSOR)
        if cursor is None:
            await self.writes.start(head)
            cursor = await asyncio.to_thread(self.store.cursor, ENRICH_CURSOR)
        self.cursor = cursor or 0

    async def catch_up(self, head: int) -> None:
        """Embed every entry up to ``head``; back off and keep the place if the embedder fails."""
        if self.metrics is not None:
            self.metrics.enrich_lag.set(max(0, head - self.cursor))
        if self.cursor >= head:
            self._progress_at = time.monotonic()  # nothing waits: not starved
            await self._recovered()
            return
        mixed = await asyncio.to_thread(mixed_model, self.store, self.embedder)  # only with work to do
        if mixed is not None:
            await self._failed(mixed, wait=False)
            return
        while self.cursor < head:
            entries = await asyncio.to_thread(self.store.entries_after, self.cursor, FETCH_ENTRIES)
            if not entries:
                break
            try:
                rows, covered = await self._paced(self._embed, entries)
            except EmbedderError as error:
                await self._failed(str(error))
                return
            if await self.writes.add(rows, self.cursor, covered, False):
                self.cursor = covered
                self._progress_at = time.monotonic()
                await self._paced(self._follow, rows)
                if self.metrics is not None:
                    self.metrics.enrich_vectors.inc(len(rows))
                    self.metrics.enrich_lag.set(max(0, head - self.cursor))
            else:  # another enricher moved the cursor, or a rebuild reset it
                await self.load(head)
        await self._recovered()

    async def _paced(self, work: Callable[..., Done], *args: object) -> Done:
        """``work(*args)`` on the embedding thread."""
        return await asyncio.get_running_loop().run_in_executor(
            self.embedding, functools.partial(work, *args))

    def _embed(self, entries: list[StoredEntry]) -> tuple[list[VectorRow], int]:
        """A round's embedding, on the embedding thread (``pace`` sets its priority first;
        the thread's id is ``embedding_thread``)."""
        self.embedding_thread = threading.get_native_id()
        self.pace()
        return embed_entries(entries, self.embedder, self.fields, self.opener)

    async def backfill_if_asked(self) -> None:
        """One round of a backfill asked through the API (``POST /v1/enrichment/backfill``),
        once the live entries are embedded; the ask is answered when none is left."""
        asked = await asyncio.to_thread(self.store.cursor, BACKFILL_ASKED)
        answered = await asyncio.to_thread(self.store.cursor, BACKFILL_ANSWERED)
        if not asked or (answered or 0) >= asked:
            return
        try:
            done = await backfill_round(self.store, self.embedder, self.fields, self.writes,
                                        self.opener, lambda entries, *_: self._embed(entries),
                                        self.embedding)
        except EmbedderError as error:
            await self._failed(str(error))
            return
        if done is None:
            await self.writes.answer(asked)
        else:
            self._progress_at = time.monotonic()

    def _follow(self, rows: list[VectorRow]) -> None:
        """``on_stored`` on the embedding thread, at its priority (adding to an index is
        HNSW work too)."""
        self.pace()
        self.on_stored(rows)

    def starved(self) -> bool:
        """Whether entries have waited ``STARVED_AFTER_S`` without a round stored."""
        return time.monotonic() - self._progress_at > STARVED_AFTER_S

    async def _failed(self, error: str, wait: bool = True) -> None:
        if self.metrics is not None and wait:
            self.metrics.enrich_failures.inc()
        if error != self.last_error:
            log.warning("enrichment stopped: %s", error)
            self.last_error = error
            await self.writes.report(error)
        if wait:
            self._retry_s = min(RETRY_MAX_S, self._retry_s * 2 or RETRY_FIRST_S)
            await asyncio.sleep(self._retry_s)

    async def _recovered(self) -> None:
        self._retry_s = 0.0
        if self.last_error is not None:
            self.last_error = None
            await self.writes.report(None)


async def backfill_round(store: Store, embedder: Embedder, fields: Sequence[str],
                         writes: EnrichWrites, opener: Opening | None,
                         embed: Callable[..., tuple[list[VectorRow], int]] = embed_entries,
                         executor: Executor | None = None) -> tuple[int, int, int] | None:
    """One round of the backfill: the entries past its cursor up to the enricher's start,
    embedded (on ``executor``; None: asyncio's default) and stored with the cursor's move
    (compare-and-set: a later run resumes there). (vectors stored, the seq reached, the
    end), or None when there is nothing left."""
    end = store.cursor(ENRICH_START) or 0
    done = store.cursor(BACKFILL_CURSOR) or 0
    entries = [e for e in store.entries_after(done, FETCH_ENTRIES) if e.seq <= end] if done < end else []
    if not entries:
        return None
    rows, covered = await asyncio.get_running_loop().run_in_executor(
        executor, functools.partial(embed, entries, embedder, fields, opener))
    stored = len(rows) if await writes.add(rows, done, covered, True) else 0
    return stored, covered, end


async def backfill(store: Store, embedder: Embedder, fields: Sequence[str], writes: EnrichWrites,
                   opener: Opening | None, progress: Callable[[int, int], None]) -> int:
    """Every backfill round (``scr enrich backfill --data``); ``progress(seq reached, end)``;
    the vectors stored."""
    if (mixed := mixed_model(store, embedder)) is not None:
        raise EmbedderError(mixed)
    if store.cursor(ENRICH_START) is None:
        await writes.start(store.last_seq())
    stored = 0
    while (round_ := await backfill_round(store, embedder, fields, writes, opener)) is not None:
        stored += round_[0]
        progress(*round_[1:])
    end = store.cursor(ENRICH_START) or 0
    progress(end, end)
    return stored
