"""``scr.Client`` / ``scr.AsyncClient`` against a real ``scr serve`` on 127.0.0.1."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest

import scr
from capture.conftest import LiveServer, live_server
from scr.route.prices import default_prices
from scr.schema import InvalidEvent, Usage
from scr.sdk import derive_event_id
from support import Receiver, wait_for

FAST_RETRY = {"backoff_base_ms": 20, "backoff_max_ms": 200, "flush_interval_ms": 20}


@pytest.fixture
def clients() -> Iterator[list[scr.Client]]:
    made: list[scr.Client] = []
    yield made
    for client in made:
        client.close(timeout_s=1)


def client_for(made: list[scr.Client], url: str, key: str, **options: object) -> scr.Client:
    client = scr.Client(url, key, organization_id="org_acme", user_id="user_7", tier="pro",
                        **{**FAST_RETRY, **options})  # type: ignore[arg-type]
    made.append(client)
    return client


def test_a_capture_arrives_as_a_full_event_costed_by_the_price_table(
    scr_server: LiveServer, clients: list[scr.Client]
) -> None:
    client = client_for(clients, scr_server.url, scr_server.ingest_key)
    event_id = client.capture(
        "sess_full", "gpt-4o-2024-08-06", input_tokens=1000, output_tokens=200,
        cache_read_tokens=400, reasoning_tokens=50, provider="openai", start_time=1_700_000_000,
        end_time=1_700_000_042.5, tags={"feature": "summarize"}, final_message="done",
    )
    assert event_id == derive_event_id("sess_full")
    assert client.flush(timeout_s=10)
    stored = scr_server.event(event_id)
    assert stored is not None
    assert stored["session"]["duration_ms"] == 42_500
    assert stored["session"]["start_time"].startswith("2023-11-14T22:13:20")
    assert stored["user"] == {"user_id": "user_7", "organization_id": "org_acme", "tier": "pro"}
    usage = stored["usage"]
    assert usage["total_tokens"] == 1200
    expected = default_prices().cost(Usage(1000, 200, 1200, "gpt-4o", Decimal(0),
                                           cache_read_tokens=400))
    # 600 × 2.50 + 400 × 1.25 + 200 × 10.00 per 1M tokens, exactly.
    assert expected == Decimal("0.0040000000")
    assert Decimal(usage["estimated_cost_usd"]) == expected
    assert stored["metadata"]["custom_tags"] == {"feature": "summarize"}
    assert client.stats().accepted == 1


def test_capturing_a_session_again_is_a_duplicate_never_a_second_charge(
    scr_server: LiveServer, clients: list[scr.Client]
) -> None:
    client = client_for(clients, scr_server.url, scr_server.ingest_key)
    first = client.capture("sess_dup", "gpt-4o", input_tokens=10, output_tokens=5,
                           start_time=1_700_000_000, end_time=1_700_000_010)
    assert client.flush(timeout_s=10)
    time.sleep(0.01)  # a later capture: only the session's own facts make up the event
    again = client.capture("sess_dup", "gpt-4o", input_tokens=10, output_tokens=5,
                           start_time=1_700_000_000, end_time=1_700_000_010)
    other = scr.Client(scr_server.url, scr_server.ingest_key, organization_id="org_acme",
                       user_id="user_7", tier="pro", **FAST_RETRY)  # e.g. a restarted process
    clients.append(other)
    other.capture("sess_dup", "gpt-4o", input_tokens=10, output_tokens=5,
                  start_time=1_700_000_000, end_time=1_700_000_010)
    # A re-emission that disagrees (more tokens) keeps the id: refused as a conflict, not billed.
    client.capture("sess_dup", "gpt-4o", input_tokens=99, output_tokens=5,
                   start_time=1_700_000_000, end_time=1_700_000_010)
    assert client.flush(timeout_s=10) and other.flush(timeout_s=10)
    assert first == again
    stats = client.stats()
    assert (stats.accepted, stats.duplicate, stats.conflict, stats.rejected) == (1, 1, 1, 0)
    assert other.stats().duplicate == 1
    stored = scr_server.session("sess_dup")
    assert len(stored) == 1 and stored[0]["event"]["usage"]["input_tokens"] == 10


def test_an_unknown_model_is_flagged_not_silently_free(
    scr_server: LiveServer, clients: list[scr.Client]
) -> None:
    client = client_for(clients, scr_server.url, scr_server.ingest_key)
    captured = client.normalize("sess_new_model", "acme-llm-9", input_tokens=10, output_tokens=5)
    assert captured.model_priced is False
    assert captured.event.metadata.custom_tags == {
        "price": "unknown", "price_table_version": default_prices().version}
    assert client.normalize("sess_known", "gpt-4o-mini", input_tokens=1).model_priced is True
    event_id = client.capture("sess_new_model", "acme-llm-9", input_tokens=10, output_tokens=5)
    assert client.flush(timeout_s=10)
    stored = scr_server.event(event_id or "")
    assert stored is not None and stored["metadata"]["custom_tags"]["price"] == "unknown"


def test_bad_input_is_counted_never_raised(scr_server: LiveServer, clients: list[scr.Client]) -> None:
    client = client_for(clients, scr_server.url, scr_server.ingest_key)
    with pytest.raises(InvalidEvent) as invalid:
        client.normalize("sess_bad", "gpt-4o", input_tokens=-1)
    assert invalid.value.problems[0].path == "$.usage.input_tokens"
    with pytest.raises(InvalidEvent):
        scr.Client(scr_server.url, "k").normalize("sess_no_org", "gpt-4o")
    assert client.capture("sess_bad", "gpt-4o", input_tokens=-1) is not None
    assert client.capture("sess_bad2", "gpt-4o", status="exploded") is not None  # type: ignore[arg-type]
    client.capture("sess_good", "gpt-4o", input_tokens=3)
    assert client.flush(timeout_s=10)
    stats = client.stats()
    assert (stats.invalid, stats.accepted) == (2, 1)
    assert scr_server.event(derive_event_id("sess_bad")) is None


def test_server_down_then_up_loses_nothing_that_fit_the_buffer(
    tmp_path: Path, clients: list[scr.Client]
) -> None:
    server = live_server(tmp_path / "data", start=False)
    client = client_for(clients, server.url, server.ingest_key, buffer_size=50)
    ids = [client.capture(f"sess_outage_{i}", "gpt-4o", input_tokens=i) for i in range(30)]
    assert all(ids)
    wait_for(lambda: client.stats().retried >= 2, what="retries while the server is down")
    assert client.stats().pending == 30
    server.process.start()
    try:
        assert client.flush(timeout_s=20)
        assert client.stats().accepted == 30
        assert all(server.event(event_id or "") is not None for event_id in ids)
    finally:
        server.process.stop()


def test_a_full_buffer_drops_and_counts_without_blocking(
    tmp_path: Path, clients: list[scr.Client]
) -> None:
    server = live_server(tmp_path / "data", start=False)
    client = client_for(clients, server.url, server.ingest_key, buffer_size=5)
    started = time.perf_counter()
    results = [client.capture(f"sess_full_buffer_{i}", "gpt-4o") for i in range(8)]
    assert time.perf_counter() - started < 1.0  # never waits for the server
    assert results[5:] == [None, None, None] and all(results[:5])
    assert client.stats().dropped == 3
    server.process.start()
    try:
        assert client.flush(timeout_s=20)
        assert (client.stats().accepted, client.stats().dropped) == (5, 3)
    finally:
        server.process.stop()


def test_a_refused_key_is_rejected_and_not_retried(
    scr_server: LiveServer, clients: list[scr.Client]
) -> None:
    client = client_for(clients, scr_server.url, "scr_not_a_key")
    client.capture("sess_bad_key", "gpt-4o")
    assert client.flush(timeout_s=10)
    stats = client.stats()
    assert (stats.rejected, stats.retried, stats.accepted) == (1, 0, 0)


def test_retry_after_is_honoured(clients: list[scr.Client]) -> None:
    receiver = Receiver(default=400, script=[(429, {"retry-after": "1"}), 503])
    try:
        client = client_for(clients, receiver.url.removesuffix("/hook"), "k")
        client.capture("sess_retry_after", "gpt-4o")
        assert client.flush(timeout_s=10)
        assert len(receiver.received) == 3
        assert client.stats().retried == 2 and client.stats().rejected == 1
    finally:
        receiver.close()


def test_events_are_flushed_at_exit(scr_server: LiveServer) -> None:
    program = (
        "import scr\n"
        f"client = scr.Client({scr_server.url!r}, {scr_server.ingest_key!r}, "
        "organization_id='org_acme', flush_interval_ms=60000)\n"
        "client.capture('sess_at_exit', 'gpt-4o', input_tokens=5)\n"
    )
    started = time.monotonic()
    subprocess.run([sys.executable, "-c", program], check=True, timeout=30)
    assert time.monotonic() - started < 20  # the flush interval (60 s) was not waited for
    assert scr_server.event(derive_event_id("sess_at_exit")) is not None


@pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork is POSIX only")
def test_a_forked_child_captures_on_its_own(scr_server: LiveServer, clients: list[scr.Client]) -> None:
    client = client_for(clients, scr_server.url, scr_server.ingest_key, flush_interval_ms=60000)
    client.capture("sess_parent_before_fork", "gpt-4o")  # queued, not sent: the parent's
    pid = os.fork()
    if pid == 0:  # the child: a fresh sender; the parent's queued event is not sent twice
        code = 1
        try:
            pending_inherited = client.stats().pending
            client.capture("sess_child", "gpt-4o")
            sent = client.flush(timeout_s=10)
            code = 0 if sent and pending_inherited == 0 and client.stats().accepted == 1 else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert scr_server.event(derive_event_id("sess_child")) is not None
    client.capture("sess_parent_after_fork", "gpt-4o")
    assert client.flush(timeout_s=10)
    assert client.stats().accepted == 2
    assert scr_server.event(derive_event_id("sess_parent_before_fork")) is not None


def test_async_client(scr_server: LiveServer) -> None:
    async def session() -> scr.sdk.CaptureStats:
        async with scr.AsyncClient(scr_server.url, scr_server.ingest_key,
                                   organization_id="org_acme") as client:
            client.capture("sess_async", "gpt-4o-mini", input_tokens=7, output_tokens=3)
            assert await client.flush(timeout_s=10)
            return client.stats()

    assert asyncio.run(session()).accepted == 1
    assert scr_server.event(derive_event_id("sess_async")) is not None


def test_url_and_key_from_the_environment(
    scr_server: LiveServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SCR_URL", scr_server.url)
    monkeypatch.setenv("SCR_KEY", scr_server.ingest_key)
    with scr.Client(organization_id="org_acme") as client:
        client.capture("sess_env", "gpt-4o")
        assert client.flush(timeout_s=10)
        assert client.stats().accepted == 1


def test_a_backlog_goes_out_batch_after_batch_without_waiting_the_interval(
    scr_server: LiveServer, clients: list[scr.Client]
) -> None:
    client = client_for(clients, scr_server.url, scr_server.ingest_key, flush_interval_ms=60_000,
                        buffer_size=5000)
    for i in range(2500):  # three batches of at most 1,000
        client.capture(f"sess_backlog_{i}", "gpt-4o-mini", input_tokens=i)
    assert client.flush(timeout_s=30)  # far less than one 60 s interval per batch
    assert client.stats().accepted == 2500


def test_text_given_to_capture_becomes_content_cut_to_its_limits(
    scr_server: LiveServer, clients: list[scr.Client]
) -> None:
    client = client_for(clients, scr_server.url, scr_server.ingest_key)
    long = "é" * 20_000  # 40,000 UTF-8 bytes: cut at a character boundary to 32,768
    with_text = client.capture("sess_text", "gpt-4o", user_request="refund the double charge",
                               summary=long, tool_outputs=[f"out {n}" for n in range(70)])
    without = client.capture("sess_plain", "gpt-4o")
    assert client.flush(timeout_s=10)
    content = scr_server.event(with_text)["content"]  # type: ignore[index]
    assert content["user_request"] == "refund the double charge"
    assert content["summary"] == "é" * 16_384
    assert content["tool_outputs"] == [f"out {n}" for n in range(6, 70)]  # the last 64
    assert "content" not in scr_server.event(without)  # type: ignore[operator]
    odd = client.capture("sess_odd", "gpt-4o", user_request="broken \ud800 surrogate")
    assert client.flush(timeout_s=10)
    assert scr_server.event(odd)["content"] == {"user_request": "broken ? surrogate"}  # type: ignore[index]
    big = client.capture("sess_big", "gpt-4o", tool_outputs=[f"{n:02d}" + "x" * 32_000 for n in range(20)])
    assert client.flush(timeout_s=10)
    kept = scr_server.event(big)["content"]["tool_outputs"]  # type: ignore[index]
    assert 0 < len(kept) < 20 and kept[-1].startswith("19")  # the oldest gave way to fit 256 KiB
    assert client.stats().accepted == 4
