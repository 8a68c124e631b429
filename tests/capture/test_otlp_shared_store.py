"""OTLP on a PostgreSQL store shared by several instances: two instances racing to emit one
session, a 2-instance cluster (``bus:``) taking spans on both, and PostgreSQL cut during ingest.

Real servers only: PostgreSQL from pgserver, nats-server with JetStream, ``scr serve``
processes and an HTTP receiver, all on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from bus.test_cluster import cluster_view, shared_by

from capture.otlp_support import OTLP_PATH, chat_span, export, json_span, span_id, stored_spans, trace_id
from scr.capture.genai import GenAISpan, session_event_id
from scr.capture.otlp import JSON, OtlpSessions, decode_export, read_spans
from scr.config import parse_config
from scr.server import build_runtime
from scr.store.postgres import partition_of
from servers import NatsServer, PostgresServer
from support import Receiver, ServerProcess, create_key, run_scr, scraped_metric, wait_for

TENANT = "org_race"
ACTOR = "key:race"
RACE_IDLE_S = 0.3
RACED_SESSIONS = 40


def spans_of(*spans: dict[str, Any]) -> list[GenAISpan]:
    """The spans of an OTLP JSON export, read as the route reads them."""
    read, problems = read_spans(decode_export(json.dumps(export(*spans)).encode(), JSON))
    assert not problems, problems
    return read


def emitted_events(postgres_uri: str) -> list[dict[str, Any]]:
    """Every session completion in the shared ledger, oldest first (the events as appended)."""
    with psycopg.connect(postgres_uri) as conn:
        rows = conn.execute(
            "SELECT entry FROM ledger WHERE kind = 'SESSION_COMPLETION' ORDER BY seq"
        ).fetchall()
    return [json.loads(bytes(entry))["payload"] for (entry,) in rows]


def emitted_count(sessions: OtlpSessions, outcome: str) -> float:
    value = sessions.runtime.metrics.registry.get_sample_value(
        "scr_otlp_sessions_emitted_total", {"outcome": outcome})
    return value or 0.0


@contextmanager
def two_instances(tmp_path: Path, postgres_uri: str) -> Iterator[tuple[OtlpSessions, OtlpSessions]]:
    """Two instances' OTLP ingest over one PostgreSQL database, each with its own committer
    (its own writer connection), without a bus: each one's idle timer sees every session."""
    config = parse_config("session_completion_runtime:\n  capture:\n    otlp:\n"
                          f"      session_idle_s: {RACE_IDLE_S}\n")
    runtimes = [build_runtime(config, tmp_path / f"data{n}", postgres_uri) for n in range(2)]
    for runtime in runtimes:
        runtime.committer.start()
    try:
        yield OtlpSessions(runtimes[0]), OtlpSessions(runtimes[1])
    finally:
        for runtime in runtimes:
            runtime.committer.close()
            runtime.store.close()


def test_two_instances_racing_to_emit_one_session_emit_it_once(tmp_path: Path, postgres_uri: str) -> None:
    """Both idle timers find the same idle sessions and emit at the same moment; and the same
    closing root span (an exporter's retry through a load balancer) reaches both at once.
    Each session is emitted by one of them, once: the other finds its spans emitted."""
    with two_instances(tmp_path, postgres_uri) as (first, second):
        async def race() -> list[int]:
            for number in range(RACED_SESSIONS):
                spans = spans_of(chat_span(trace_id(), span_id(), 0, 1, 10, 1,
                                           gen_ai__conversation__id=f"idle-{number}"))
                await (first, second)[number % 2].ingest(TENANT, ACTOR, spans)
            await asyncio.sleep(RACE_IDLE_S + 0.2)
            emitted = await asyncio.gather(first.emit_idle(), second.emit_idle())
            for number in range(RACED_SESSIONS):
                trace, root = trace_id(), span_id()
                conversation = f"root-{number}"
                await second.ingest(TENANT, ACTOR, spans_of(
                    chat_span(trace, root, 0, 1, 10, 1, gen_ai__conversation__id=conversation)))
                closing = spans_of(json_span(trace, root, "", 0, 2, name="invoke_agent",
                                             gen_ai__operation__name="invoke_agent",
                                             gen_ai__conversation__id=conversation))
                await asyncio.gather(first.ingest(TENANT, ACTOR, closing),
                                     second.ingest(TENANT, ACTOR, closing))
            return list(emitted)

        idle_emitted = asyncio.run(race())
        assert sum(idle_emitted) == RACED_SESSIONS, idle_emitted
        for outcome in ("duplicate", "conflict", "rejected"):
            assert emitted_count(first, outcome) + emitted_count(second, outcome) == 0, outcome
        assert emitted_count(first, "accepted") + emitted_count(second, "accepted") == 2 * RACED_SESSIONS
    events = emitted_events(postgres_uri)
    by_session = Counter(event["session"]["session_id"] for event in events)
    wanted = {f"idle-{n}" for n in range(RACED_SESSIONS)} | {f"root-{n}" for n in range(RACED_SESSIONS)}
    assert set(by_session) == wanted and set(by_session.values()) == {1}
    for event in events:
        session = event["session"]["session_id"]
        assert event["event_id"] == session_event_id(TENANT, f"c:{session}", 0)
        assert event["metadata"]["custom_tags"]["spans"] == ("1" if session.startswith("idle") else "2")
    assert all(emitted for _span, emitted, _body in stored_spans(tmp_path, postgres_uri))
    with psycopg.connect(postgres_uri) as conn:
        assert conn.execute("SELECT count(*) FROM otlp_sessions").fetchone() == (0,)


# ----- a 2-instance cluster -------------------------------------------------------------------

PARTITIONS = 8
OWNERSHIP_POLL_MS = 200
# A session's spans reach the two instances in turn, one request after another; each gap must
# stay under the idle time, or the session ends early (a fresh clone of e1e0bfd on a slow day
# saw a root arrive after its children's session had ended at 1 s)
CLUSTER_IDLE_S = 3
SESSIONS_PER_KIND = 4  # per tenant: rooted sessions, and sessions that end by idle time
EMITTED_WITHIN_S = 30.0
EMITTED_METRIC = 'scr_otlp_sessions_emitted_total{outcome="accepted"}'


def post_spans(url: str, key: str, *spans: dict[str, Any]) -> None:
    answer = httpx.post(f"{url}{OTLP_PATH}", content=json.dumps(export(*spans)), timeout=10,
                        headers={"content-type": "application/json", "authorization": f"Bearer {key}"})
    assert answer.status_code == 200 and answer.json() == {}, answer.text


@contextmanager
def otlp_cluster(tmp_path: Path, postgres_uri: str, nats: NatsServer, hook: Receiver
                 ) -> Iterator[tuple[list[ServerProcess], str]]:
    """Two ``scr serve`` over one PostgreSQL and one JetStream, partitions shared; the admin key."""
    config = tmp_path / "scr.yaml"
    config.write_text(
        "session_completion_runtime:\n"
        f"  bus: {nats.url}\n"
        f"  cluster: {{partitions: {PARTITIONS}, ack_wait_ms: 1000,\n"
        f"             ownership_poll_ms: {OWNERSHIP_POLL_MS}}}\n"
        f"  capture: {{otlp: {{session_idle_s: {CLUSTER_IDLE_S}}}}}\n"
        "  routing:\n    destinations:\n"
        f'      - {{name: hook, endpoint: "{hook.url}"}}\n'
    )
    admin = create_key(tmp_path / "keys", role="admin", store=postgres_uri)
    servers = [ServerProcess(tmp_path / f"data{n}", config, store=postgres_uri) for n in range(2)]
    try:
        for server in servers:
            server.start()
        for server in servers:
            wait_for(lambda s=server: shared_by(s.url, admin, len(servers)), timeout_s=20,  # type: ignore[misc]
                     what=f"the partitions shared, as {server.url} sees them")
        yield servers, admin
    finally:
        for server in servers:
            server.stop()


def partition_owners(url: str, admin: str) -> dict[int, str]:
    return {p: i["url"] for i in cluster_view(url, admin)["instances"] for p in i["partitions"]}


@pytest.mark.slow
def test_a_cluster_emits_every_session_once_the_idle_ones_by_their_partitions_owner(
    tmp_path: Path, postgres_uri: str, nats_server: NatsServer
) -> None:
    """Spans of each session go to both instances. A session whose root arrives is emitted by
    the instance that took the root; one that ends by idle time, by the owner of its tenant's
    partition, even when every span of it went to the other instance. Each is in the ledger
    once, delivered, and the chains verify."""
    hook = Receiver()
    try:
        with otlp_cluster(tmp_path, postgres_uri, nats_server, hook) as (servers, admin):
            urls = [s.url for s in servers]
            owners = partition_owners(urls[0], admin)
            # two tenants of each instance's partitions
            tenants: list[str] = []
            for url in urls:
                mine = [t for t in (f"org_{n}" for n in range(64))
                        if owners[partition_of(t, PARTITIONS)] == url]
                tenants += mine[:2]
            keys = {t: create_key(tmp_path / "keys", t, "ingest", postgres_uri) for t in tenants}
            expected: Counter[str] = Counter()  # accepted emissions, by the instance that emits
            wanted: set[str] = set()
            for tenant in tenants:
                owner = owners[partition_of(tenant, PARTITIONS)]
                other = next(u for u in urls if u != owner)
                for number in range(SESSIONS_PER_KIND):
                    # rooted: the children at one instance, the root at the other
                    trace, root = trace_id(), span_id()
                    children_at, root_at = (urls[0], urls[1]) if number % 2 else (urls[1], urls[0])
                    post_spans(children_at, keys[tenant], chat_span(trace, root, 0, 1, 10, 1),
                               chat_span(trace, root, 1, 2, 20, 2))
                    post_spans(root_at, keys[tenant], json_span(trace, root, "", 0, 3, name="POST /chat"))
                    expected[root_at] += 1
                    wanted.add(session_event_id(tenant, f"t:{trace}", 0))
                    # idle: every span at the instance that does not own the tenant's partition,
                    # or one there and one at the owner
                    conversation = f"conv-{tenant}-{number}"
                    # (children of roots not sent: a conversation's own root would end it)
                    post_spans(other, keys[tenant], chat_span(
                        trace_id(), span_id(), 0, 1, 5, 1, gen_ai__conversation__id=conversation))
                    post_spans(owner if number % 2 else other, keys[tenant], chat_span(
                        trace_id(), span_id(), 1, 2, 5, 1, gen_ai__conversation__id=conversation))
                    expected[owner] += 1
                    wanted.add(session_event_id(tenant, f"c:{conversation}", 0))
            wait_for(lambda: {e["event_id"] for e in emitted_events(postgres_uri)} >= wanted,
                     timeout_s=EMITTED_WITHIN_S, what="every session emitted")
            time.sleep(2 * CLUSTER_IDLE_S)  # time for a second emission, were there one
            events = emitted_events(postgres_uri)
            assert sorted(e["event_id"] for e in events) == sorted(wanted), [
                (e["session"]["session_id"], e["metadata"]["custom_tags"]) for e in events
                if e["event_id"] not in wanted]
            assert all(e["metadata"]["custom_tags"]["spans"] in ("2", "3") for e in events)
            assert partition_owners(urls[0], admin) == owners, "ownership moved during the test"
            emitted = {url: scraped_metric(url, EMITTED_METRIC) for url in urls}
            assert emitted == {url: float(expected[url]) for url in urls}, (emitted, expected)
            wait_for(lambda: wanted <= hook.event_ids(), timeout_s=60, what="every session delivered")
            with psycopg.connect(postgres_uri) as conn:
                assert conn.execute("SELECT count(*) FROM otlp_sessions").fetchone() == (0,)
                assert conn.execute(
                    "SELECT count(*) FROM otlp_spans WHERE emitted_at IS NULL").fetchone() == (0,)
        verified = run_scr("ledger", "verify", "--store", postgres_uri, check=False)
        assert verified.returncode == 0, verified.stdout + verified.stderr
    finally:
        hook.close()


# ----- PostgreSQL cut during ingest -----------------------------------------------------------

CUT_IDLE_S = 1
CONVERSATIONS = 12
PG_CUT_S = 4.0  # under the key cache time: the stream's key stays good without the store
NOT_READY_LIMIT_S = 10.0
READY_AGAIN_LIMIT_S = 30.0


class SpanStream:
    """Posts OTLP exports to one server until stopped: conversations that end by idle time,
    and whole traces that end with their root; remembers the spans each answer acknowledged."""

    def __init__(self, url: str, key: str) -> None:
        self.url, self.key = url, key
        self.acknowledged: list[str] = []
        self.refused: list[tuple[int, Any]] = []  # (status, error body) of every other answer
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run)

    def _run(self) -> None:
        number = 0
        with httpx.Client(timeout=10) as client:
            while not self.stop.is_set():
                number += 1
                trace, root = trace_id(), span_id()
                if number % 4:
                    spans = [chat_span(trace_id(), span_id(), 0, 1, 1, 1,
                                       gen_ai__conversation__id=f"cut-{number % CONVERSATIONS}")
                             for _ in range(3)]
                else:
                    spans = [chat_span(trace, root, 0, 1, 1, 1), chat_span(trace, root, 1, 2, 1, 1),
                             json_span(trace, root, "", 0, 3, name="POST /chat")]
                try:
                    answer = client.post(f"{self.url}{OTLP_PATH}", content=json.dumps(export(*spans)),
                                         headers={"content-type": "application/json",
                                                  "authorization": f"Bearer {self.key}"})
                except httpx.HTTPError as error:
                    self.refused.append((0, str(error)))
                    continue
                if answer.status_code == 200:
                    self.acknowledged += [span["spanId"] for span in spans]
                else:
                    self.refused.append((answer.status_code, answer.json()))
                time.sleep(0.005)

    def more(self, spans: int, timeout_s: float = 30) -> None:
        count = len(self.acknowledged)
        wait_for(lambda: len(self.acknowledged) >= count + spans, timeout_s=timeout_s,
                 what=f"{spans} more spans acknowledged")


def status_of(url: str, path: str) -> int:
    try:
        return httpx.get(f"{url}{path}", timeout=5).status_code
    except httpx.HTTPError:
        return 0


@pytest.mark.slow
def test_a_postgresql_cut_during_otlp_ingest_loses_no_acknowledged_span(
    tmp_path: Path, postgres_server: PostgresServer, postgres_uri: str
) -> None:
    """While PostgreSQL is cut off, exports answer 503 with the standard error body and the
    server stays up; once it is back, every span answered 200 is in exactly one emitted
    session, and nothing was counted twice."""
    config = tmp_path / "scr.yaml"
    config.write_text(f"session_completion_runtime:\n  capture: {{otlp: {{session_idle_s: {CUT_IDLE_S}}}}}\n")
    key = create_key(tmp_path / "keys", "org_cut", "ingest", postgres_uri)
    server = ServerProcess(tmp_path / "data", config, store=postgres_uri).start()
    stream = SpanStream(server.url, key)
    try:
        stream.thread.start()
        stream.more(300)
        try:
            postgres_server.refuse_connections(postgres_uri, True)
            cut_at = time.monotonic()
            assert postgres_server.cut_connections(postgres_uri) >= 1
            before_cut = len(stream.refused)
            wait_for(lambda: status_of(server.url, "/readyz") == 503, timeout_s=NOT_READY_LIMIT_S,
                     what="not ready while PostgreSQL is cut off")
            while time.monotonic() - cut_at < PG_CUT_S:
                assert status_of(server.url, "/healthz") == 200  # alive, only not ready
                time.sleep(0.2)
            refused_during_cut = len(stream.refused) - before_cut
        finally:
            postgres_server.refuse_connections(postgres_uri, False)
        assert refused_during_cut > 0, "no export refused while PostgreSQL was cut off"
        wait_for(lambda: status_of(server.url, "/readyz") == 200, timeout_s=READY_AGAIN_LIMIT_S,
                 what="ready again")
        stream.more(300)
    finally:
        stream.stop.set()
        stream.thread.join(timeout=20)
        try:
            for status, body in stream.refused:
                assert status == 503, (status, body)
                assert set(body["error"]) == {"code", "message", "details"} and body["error"]["message"]
            acknowledged = set(stream.acknowledged)
            wait_for(lambda: all(emitted for _s, emitted, _b in stored_spans(tmp_path, postgres_uri)),
                     timeout_s=CUT_IDLE_S + 20, what="every stored span emitted")
        finally:
            server.stop()
    stored = {span: emitted for span, emitted, _body in stored_spans(tmp_path, postgres_uri)}
    assert acknowledged <= set(stored), f"{len(acknowledged - set(stored))} acknowledged spans lost"
    events = emitted_events(postgres_uri)
    # each stored span is in one event: the events' span counts add up to the stored spans
    assert sum(int(e["metadata"]["custom_tags"]["spans"]) for e in events) == len(stored)
    assert len({e["event_id"] for e in events}) == len(events)
    print(f"\n{len(acknowledged)} spans acknowledged, {len(stored)} stored, {refused_during_cut} "
          f"exports refused during the {PG_CUT_S:.0f} s cut, {len(events)} sessions emitted")
