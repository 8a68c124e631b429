"""Fixtures of the capture tests: a real ``scr serve`` with an ingest and a read key."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

import scr
from capture.openai_server import OpenAIServer
from support import ServerProcess, create_key

CAPTURED_WITHIN_S = 10


@dataclass
class LiveServer:
    """A running ``scr serve`` and keys for tenant ``org_acme``."""

    process: ServerProcess
    ingest_key: str
    read_key: str

    @property
    def url(self) -> str:
        return self.process.url

    def event(self, event_id: str) -> dict[str, Any] | None:
        """The stored event, or ``None`` if the server does not have it."""
        answer = httpx.get(f"{self.url}/v1/events/{event_id}",
                           headers={"authorization": f"Bearer {self.read_key}"}, timeout=10)
        if answer.status_code == 404:
            return None
        answer.raise_for_status()
        event: dict[str, Any] = answer.json()["event"]
        return event

    def session(self, session_id: str) -> list[dict[str, Any]]:
        """The session's stored events; none while the server has not seen the session."""
        answer = httpx.get(f"{self.url}/v1/sessions/{session_id}",
                           headers={"authorization": f"Bearer {self.read_key}"}, timeout=10)
        if answer.status_code == 404:
            return []
        answer.raise_for_status()
        events: list[dict[str, Any]] = answer.json()["events"]
        return events

    def only_event(self, client: scr.Client, session_id: str) -> dict[str, Any]:
        """The one event of a session, once ``client`` has sent it. A gateway's middleware
        captures after the answer's last byte went out, so the caller may see the answer
        before the event is in the client's queue: flushed and looked for until it is there."""
        deadline = time.monotonic() + CAPTURED_WITHIN_S
        while True:
            assert client.flush(timeout_s=CAPTURED_WITHIN_S)
            events = self.session(session_id)
            if events or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert len(events) == 1, events
        event: dict[str, Any] = events[0]["event"]
        return event


def live_server(data: Path, start: bool = True) -> LiveServer:
    """Keys in ``data`` and a server over it (started unless ``start`` is false)."""
    process = ServerProcess(data)
    server = LiveServer(process, create_key(data), create_key(data, role="read"))
    if start:
        process.start()
    return server


@pytest.fixture(scope="module")
def llm() -> Iterator[OpenAIServer]:
    """The local OpenAI-compatible test server."""
    with OpenAIServer() as server:
        yield server


@pytest.fixture(scope="module")
def capture(scr_server: LiveServer) -> Iterator[scr.Client]:
    """An SDK client of ``scr_server`` for tenant ``org_acme``, sending every 10 ms."""
    client = scr.Client(scr_server.url, scr_server.ingest_key, organization_id="org_acme",
                        flush_interval_ms=10)
    yield client
    client.close(timeout_s=2)


@pytest.fixture(scope="module")
def scr_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    server = live_server(tmp_path_factory.mktemp("scr") / "data")
    yield server
    server.process.stop()
