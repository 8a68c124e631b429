"""The usage reader: follows the ledger from its durable cursor and keeps the aggregates.

Each round reads up to ``FETCH_ENTRIES`` entries past the cursor, adds them up in memory
(``scr.usage.aggregate``) and writes one row per distinct key with the cursor moved past the
round, in one transaction. The cursor moves by compare-and-set (``Store.add_usage``): a write
of a reader killed mid-round that the writer still commits is counted once, and the next
reader, seeing its own write refused, reads the cursor again. So a SIGKILL never counts an
event twice or never.

The histograms of session durations (``scr.usage.durations``) go in that same write.

Budgets (``scr.usage.budgets``): each round's alerts go in the same write as its rows and
cursor, so a round the store refused raised none, and one it took raised each once.

Anomalies (``scr.usage.judging``): once a round reached the ledger's head, the windows closed
by the reader's clock since the judged mark are judged, and their ANOMALY entries go in one
write with the mark's move (and an empty round of rows), checked the same way.

The gauges (cost and tokens by tenant and model) are running totals: loaded from the
aggregates at start, then advanced by each round the store accepted.

The cursor is a ledger ``seq`` over the whole ledger, every tenant's entries in one order.
That is sound because no read passes a seq that could still commit: SQLite has one writer, and
PostgreSQL, whose partitions' owners commit side by side, hands readers entries only up to
its safe seq, below every seq still in flight (``PostgresStore.last_seq``). A reader past seq
N has seen every entry up to N, whichever instance appended it. (Seqs of a rolled-back group
are skipped, never filled in later.)
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from scr.config import AnomalyConfig, BudgetConfig
from scr.log.commit import utc_now
from scr.log.entry import Kind
from scr.metrics import Metrics
from scr.route.price_file import PriceSource
from scr.store.protocol import Store
from scr.store.records import USAGE_COUNT_COLUMNS, USAGE_CURSOR, DurationRow, StoredEntry, UsageRow
from scr.usage.aggregate import count_group, count_sessions
from scr.usage.alerts import key_of, sent_keys
from scr.usage.anomalies import WINDOW_MINUTES
from scr.usage.budgets import crossings, spent, spent_now
from scr.usage.counting import COST_PLACES, scaled
from scr.usage.judging import ANOMALY_MARK, judge_windows, windows_due

# Ledger entries counted and written per round at most. Large rounds write fewer rows per
# event (the events of a minute that share a key become one row): at 20k events/s a
# round of half a second is 10,000 events.
FETCH_ENTRIES = 10_000
BUDGET_GAUGES_EVERY_S = 60.0  # the budgets' use is read again at least this often when idle
ALL_MINUTES = (0, 15 * 2**58)  # every minute the aggregates hold, in whole quarter hours

# write(rows, after_seq, seq, alerts, durations, judged): the rows, the cursor's move, the
# BUDGET_ALERT and ANOMALY entries, the duration histograms and the judged mark's move (0: none),
# in one transaction; whether the store took it (False: the cursor was not at after_seq)
WriteUsage = Callable[[list[UsageRow], int, int, list[dict[str, Any]], list[DurationRow], int],
                      Awaitable[bool]]


class UsageReader:
    """The aggregates' writer: one instance per store at a time (``scr: usage``)."""

    def __init__(self, store: Store, prices: PriceSource, write: WriteUsage, metrics: Metrics,
                 budgets: Sequence[BudgetConfig] = (), anomalies: AnomalyConfig | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.store, self.prices, self.write, self.metrics = store, prices, write, metrics
        self.budgets = list(budgets)
        self.anomalies, self.clock = anomalies, clock  # clock: Unix time (a test's own)
        self.sent: set[str] = set()  # identities of the BUDGET_ALERT entries ledgered
        self.cursor = 0
        self._totals: dict[tuple[str, str], list[int]] = {}  # (tenant, model) → [cost, tokens]
        self._budgets_shown_at: float | None = None  # the clock when the budget gauges were set

    def load(self) -> None:
        """Read the cursor, then the totals for the gauges (blocking: call in a thread). The
        cursor is a global ledger seq, sound while seqs are committed in order (see above)."""
        self.cursor = self.store.cursor(USAGE_CURSOR) or 0
        self.sent = set().union(*(
            sent_keys(self.store.tenant_entries_of_kinds(tenant, [Kind.BUDGET_ALERT.value], 0))
            for tenant in {budget.tenant for budget in self.budgets}
        ))
        first, end = ALL_MINUTES
        self._totals = {
            (found.tenant, found.keys[0]): [scaled(Decimal(found.cost_usd), COST_PLACES),
                                            found.counts[USAGE_COUNT_COLUMNS.index("total_tokens")]]
            for found in self.store.usage_sums(None, first, end, end - first, ["model"])
        }
        for (tenant, model), (cost, tokens) in self._totals.items():
            self._set_gauges(tenant, model, cost, tokens)

    async def catch_up(self, head: int) -> None:
        """Count every entry up to ``head`` (the ledger's newest seq)."""
        started_at = self.cursor
        while self.cursor < head:
            entries = await asyncio.to_thread(self.store.entries_after, self.cursor, FETCH_ENTRIES)
            if not entries:
                break
            rows, durations = await asyncio.to_thread(self.count, entries)
            alerts = await asyncio.to_thread(self.alerts, rows)
            if await self.write(rows, self.cursor, entries[-1].seq, alerts, durations, 0):
                self.cursor = entries[-1].seq
                self.sent.update(key_of(alert) for alert in alerts)
                self._add_to_totals(rows)
            else:  # another reader moved the cursor (a killed predecessor's last write)
                await asyncio.to_thread(self.load)
        self.metrics.usage_lag.set(max(0, head - self.cursor))
        if self._budgets_due(self.cursor != started_at):
            await asyncio.to_thread(self.show_budgets)
        if self.anomalies is not None and self.cursor >= head:
            await self.judge()

    async def judge(self) -> None:
        """Judge the windows closed since the judged mark, in one write with the mark's move."""
        assert self.anomalies is not None
        mark = await asyncio.to_thread(self.store.cursor, ANOMALY_MARK)
        if mark is None and not self.cursor:
            return  # nothing counted yet: no window to judge, and the mark waits for data
        starts = windows_due(mark, self.clock(), self.anomalies.window)
        if not starts:
            return
        raised = await asyncio.to_thread(judge_windows, self.store, self.anomalies, starts, utc_now())
        if await self.write([], self.cursor, self.cursor, raised, [],
                            starts[-1] + WINDOW_MINUTES[self.anomalies.window]):
            for alert in raised:
                self.metrics.anomalies_raised.labels(alert["data"]["tenant"], alert["data"]["metric"]).inc()
        else:
            await asyncio.to_thread(self.load)

    def count(self, entries: list[StoredEntry]) -> tuple[list[UsageRow], list[DurationRow]]:
        """The aggregate rows and the duration histograms of a round of entries."""
        group = count_group(entries, self.prices.current())
        count_sessions(group, entries[0].seq, self.store)
        return group.rows(), group.duration_rows()

    def alerts(self, rows: list[UsageRow]) -> list[dict[str, Any]]:
        """The budget alerts a round's rows raise (blocking: reads the committed aggregates)."""
        if not self.budgets:
            return []
        return crossings(self.budgets, rows, self._spent, self.sent, utc_now())

    def _spent(self, tenant: str, from_minute: int, to_minute: int) -> Decimal:
        return spent(self.store, tenant, from_minute, to_minute)

    def show_budgets(self) -> None:
        """Set each budget's use of its current period (blocking: reads the aggregates)."""
        now = self.clock()
        for budget in self.budgets:
            _, _, amount = spent_now(self.store, budget, datetime.fromtimestamp(now, UTC))
            self.metrics.budget_used.labels(budget.tenant, budget.period).set(float(amount / budget.limit))
        self._budgets_shown_at = now

    def _budgets_due(self, counted: bool) -> bool:
        """Whether to read the budgets' use again: something was counted, or a while passed
        (a new period starts with nothing spent, with or without traffic)."""
        shown_at = self._budgets_shown_at
        return bool(self.budgets) and (counted or shown_at is None
                                       or self.clock() - shown_at >= BUDGET_GAUGES_EVERY_S)

    def hide_gauges(self) -> None:
        """Zero this process's usage gauges: another instance took the usage lease over and
        shows them now (summed over a cluster's instances, each total counts once)."""
        for tenant, model in self._totals:
            self._set_gauges(tenant, model, 0, 0)
        for budget in self.budgets:
            self.metrics.budget_used.labels(budget.tenant, budget.period).set(0)
        self.metrics.usage_lag.set(0)

    def _add_to_totals(self, rows: list[UsageRow]) -> None:
        touched: set[tuple[str, str]] = set()
        for row in rows:
            key = (row.tenant, row.model)
            totals = self._totals.setdefault(key, [0, 0])
            totals[0] += scaled(Decimal(row.cost_usd), COST_PLACES)
            totals[1] += row.total_tokens
            touched.add(key)
        for key in touched:
            self._set_gauges(*key, *self._totals[key])

    def _set_gauges(self, tenant: str, model: str, cost: int, tokens: int) -> None:
        self.metrics.usage_cost.labels(tenant, model).set(cost / 10**COST_PLACES)
        self.metrics.usage_tokens.labels(tenant, model).set(tokens)
