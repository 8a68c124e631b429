"""``GET /v1/dashboard/live``: keys and roles, one tenant's numbers only, bad parameters, and
bounded streams, in the one-process app and from an edge of a real ``scr serve``."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import config_text
from scr.dashboard.live import LIVE_PATH, MAX_LIVE_STREAMS, MAX_STREAM_EVENTS
from support import ServerProcess, create_key, make_event, run_scr, wait_for

RECEIVE_TIMEOUT_S = 30.0
ALPHA_EVENTS, BETA_EVENTS = 3, 5  # distinct, so each tenant's count is recognisable


def _updates(text: str) -> list[dict[str, Any]]:
    """The ``data:`` of each ``numbers`` event of a stream's text."""
    found = []
    for message in text.split("\n\n"):
        lines = message.split("\n")
        if "event: numbers" in lines:
            found.append(json.loads(next(line for line in lines if line.startswith("data: "))[6:]))
    return found


def _events(tenant: str, count: int, word: str) -> list[dict[str, Any]]:
    return [make_event(f"evt_{word}_{n}", **{"user.organization_id": tenant,
                                             "session.session_id": f"sess_{word}_{n}"})
            for n in range(count)]


def test_a_read_key_sees_its_own_tenants_counts_only(serve: Any) -> None:
    client = serve()
    alpha, beta = client.key("org_alpha", "ingest"), client.key("org_beta", "ingest")
    assert client.post("/v1/events", json=_events("org_alpha", ALPHA_EVENTS, "alpha"),
                       headers=alpha).status_code == 202
    assert client.post("/v1/events", json=_events("org_beta", BETA_EVENTS, "beta"),
                       headers=beta).status_code == 202
    # a batch with one invalid event: rejected, and counted against alpha (the key's tenant)
    mixed = [make_event("evt_alpha_again", **{"user.organization_id": "org_alpha"}), {"event_id": "x"}]
    assert client.post("/v1/events", json=mixed, headers=alpha).status_code == 207
    assert client.post("/v1/events", json=_events("org_alpha", 1, "alpha"),
                       headers=alpha).status_code == 202  # a duplicate
    for tenant, role, accepted, rejected, duplicate in (
        ("org_alpha", "read", ALPHA_EVENTS + 1, 1, 1), ("org_beta", "admin", BETA_EVENTS, 0, 0),
    ):
        answer = client.get(LIVE_PATH, params={"events": 2}, headers=client.key(tenant, role))
        assert answer.status_code == 200, answer.text
        assert answer.headers["content-type"].startswith("text/event-stream")
        first, second = _updates(answer.text)
        assert (first["tenant"], first["accepted"], first["rejected"], first["duplicate"]) == (
            tenant, accepted, rejected, duplicate)
        assert first["acceptance_rate"] == accepted / (accepted + rejected)
        assert second["ts"] >= first["ts"]
        other = "org_beta" if tenant == "org_alpha" else "org_alpha"
        assert other not in answer.text


def test_destinations_show_their_lag_and_the_tenants_dead_letters(serve: Any, receivers: Any) -> None:
    gone = receivers(default=400)  # a 4xx dead-letters at once
    client = serve(config_text(f"      - {{name: hooks, endpoint: '{gone.url}', transform: billing_v1}}"))
    ingest = client.key("org_alpha", "ingest")
    assert client.post("/v1/events", json=_events("org_alpha", 2, "dead"), headers=ingest).status_code == 202
    read = client.key("org_alpha", "read")

    def dead_letters() -> Any:
        (update,) = _updates(client.get(LIVE_PATH, params={"events": 1}, headers=read).text)
        settled = update["destinations"][0]["dead"] == 2 and update["destinations"][0]["lag"] == 0
        return update["destinations"] if settled else None

    (hooks,) = wait_for(dead_letters, RECEIVE_TIMEOUT_S, "two dead letters")
    assert hooks == {"name": "hooks", "lag": 0, "dead": 2}
    (beta,) = _updates(client.get(LIVE_PATH, params={"events": 1},
                                  headers=client.key("org_beta", "read")).text)
    assert beta["destinations"] == [{"name": "hooks", "lag": 0, "dead": 0}]  # alpha's are not beta's


@pytest.mark.parametrize(("role", "status"), [(None, 401), ("ingest", 403), ("auditor", 403),
                                              ("platform", 403)])
def test_keys_that_may_not_read_are_refused(serve: Any, role: str | None, status: int) -> None:
    client = serve()
    headers = {"authorization": "Bearer scr_not_a_key"} if role is None else client.key("org_alpha", role)
    answer = client.get(LIVE_PATH, params={"events": 1}, headers=headers)
    assert answer.status_code == status, answer.text
    assert set(answer.json()["error"]) == {"code", "message", "details"}
    assert client.get(LIVE_PATH, params={"events": 1}).status_code == 401  # no key at all


@pytest.mark.parametrize("events", ["0", "-1", "abc", "1.5", str(MAX_STREAM_EVENTS + 1), "²", ""])
def test_a_bad_number_of_events_is_400_naming_it(serve: Any, events: str) -> None:
    client = serve()
    answer = client.get(LIVE_PATH, params={"events": events}, headers=client.key("org_alpha", "read"))
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["details"][0]["path"] == "events"
    assert client.get("/healthz").status_code == 200


# ----- from an edge of a real scr serve: held open, bounded, a client that leaves ------------


@pytest.fixture
def one_edge(tmp_path: Path) -> Iterator[ServerProcess]:
    config = tmp_path / "scr.yaml"
    config.write_text("session_completion_runtime:\n  server: {workers: 1}\n")
    server = ServerProcess(tmp_path / "data", config).start()
    yield server
    server.stop()


@dataclass
class Held:
    answer: httpx.Response
    first: dict[str, Any]
    chunks: Iterator[str]  # the rest of the stream


@contextlib.contextmanager
def _stream(http: httpx.Client, headers: dict[str, str]) -> Iterator[Held]:
    """A live stream held open, with its first update read."""
    with http.stream("GET", LIVE_PATH, headers=headers) as answer:
        held = Held(answer, {}, answer.iter_text())  # closing ``chunks`` would end the stream
        if answer.status_code == 200:
            text = ""
            for chunk in held.chunks:
                text += chunk
                if "\n\n" in text:
                    break
            (held.first,) = _updates(text)
        yield held


def test_an_edge_streams_bounded_numbers_and_frees_a_stream_whose_client_left(
    one_edge: ServerProcess,
) -> None:
    data = one_edge.data
    ingest = {"authorization": f"Bearer {create_key(data, 'org_alpha', 'ingest')}"}
    read = {"authorization": f"Bearer {create_key(data, 'org_alpha', 'read')}"}
    with httpx.Client(base_url=one_edge.url, timeout=RECEIVE_TIMEOUT_S) as http:
        posted = http.post("/v1/events", json=_events("org_alpha", ALPHA_EVENTS, "edge"), headers=ingest)
        assert posted.status_code == 202, posted.text
        with contextlib.ExitStack() as held:
            clients = [held.enter_context(httpx.Client(base_url=one_edge.url, timeout=RECEIVE_TIMEOUT_S))
                       for _ in range(MAX_LIVE_STREAMS)]
            streams = [held.enter_context(_stream(other, read)) for other in clients]
            assert [held.answer.status_code for held in streams] == [200] * MAX_LIVE_STREAMS
            assert streams[0].first["accepted"] == ALPHA_EVENTS
            with _stream(http, read) as refused:
                assert refused.answer.status_code == 503
                refused.answer.read()
                assert refused.answer.json()["error"]["code"] == "unavailable"

        # every client left: the edge notices and takes new streams again; it stayed up
        def streams_again() -> bool:
            with _stream(http, read) as held:
                return held.answer.status_code == 200 and held.first["accepted"] == ALPHA_EVENTS

        wait_for(streams_again, RECEIVE_TIMEOUT_S, "a stream once the others left")
        assert http.get("/healthz").status_code == 200


def test_a_stream_ends_once_its_key_is_revoked(one_edge: ServerProcess) -> None:
    made = run_scr("keys", "create", "--data", str(one_edge.data), "--tenant", "org_alpha", "--role", "read")
    key_id = made.stdout.split("created key ", 1)[1].split()[0]
    read = {"authorization": f"Bearer {made.stdout.strip().splitlines()[-1]}"}
    with httpx.Client(base_url=one_edge.url, timeout=RECEIVE_TIMEOUT_S) as http:
        with _stream(http, read) as held:
            assert held.answer.status_code == 200 and held.first["tenant"] == "org_alpha"
            run_scr("keys", "revoke", key_id, "--data", str(one_edge.data))
            rest = "".join(held.chunks)  # returns once the server ends the stream
        assert len(_updates(rest)) < MAX_STREAM_EVENTS
        assert http.get(LIVE_PATH, headers=read).status_code == 401
