"""Fixtures for the ledger tests: real apps over data folders that outlive them, and events."""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from conftest import config_text
from scr.config import parse_config
from scr.log.commit import Submission
from scr.schema import canonical_bytes, decode_event
from scr.server import create_app
from support import create_key, make_event

Headers = dict[str, str]


class LedgerApp:
    """A real app over a data folder (and a PostgreSQL store when ``store_uri`` is given);
    stop it, tamper with the folder, start another over it."""

    def __init__(self, data: Path, config: str, store_uri: str | None = None) -> None:
        self.data, self.store_uri = data, store_uri
        self.client = TestClient(create_app(parse_config(config), data, store_uri))
        self.client.__enter__()
        self.running = True

    def key(self, tenant: str = "org_acme", role: str = "admin") -> Headers:
        return {"authorization": f"Bearer {create_key(self.data, tenant, role, self.store_uri)}"}

    def post(self, headers: Headers, event_ids: list[str], tenant: str = "org_acme") -> None:
        events = [make_event(i, **{"user.organization_id": tenant}) for i in event_ids]
        answer = self.client.post("/v1/events", json=events, headers=headers)
        assert answer.status_code == 202, answer.text

    def checkpoint(self, headers: Headers) -> str:
        answer = self.client.post("/v1/ledger/checkpoint", headers=headers)
        assert answer.status_code == 200, answer.text
        return answer.text

    def stop(self) -> None:
        """Stop the app, and wait for the checkpoint thread's last round (it follows the writer)."""
        if self.running:
            self.client.__exit__(None, None, None)
            self.running = False
            for thread in threading.enumerate():
                if thread.name == "scr-checkpoints":
                    thread.join(timeout=10)


StartApp = Callable[..., LedgerApp]


@pytest.fixture
def start_app(store_uri: str | None) -> Iterator[StartApp]:
    """``start_app(data, config=None)``: a running app (on the SQLite store of ``data``, or on
    both stores in a test marked ``every_store``); all are stopped after the test."""
    started: list[LedgerApp] = []

    def start(data: Path, config: str | None = None) -> LedgerApp:
        app = LedgerApp(data, config or config_text(), store_uri)
        started.append(app)
        return app

    yield start
    for app in started:
        app.stop()


def quick_rhythm(every_entries: int = 1_000_000, every_s: float = 86_400.0) -> str:
    """A config without destinations and with the given checkpoint rhythm."""
    return (
        config_text()
        + f"  ledger:\n    checkpoint_every_entries: {every_entries}\n    checkpoint_every_s: {every_s}\n"
    )


def submission(event_id: str, tenant: str = "org_acme") -> Submission:
    """A validated event ready for ``Committer.append_events``."""
    event = decode_event(json.dumps(make_event(event_id, **{"user.organization_id": tenant})).encode())
    payload = canonical_bytes(event)
    return Submission(event, payload, hashlib.blake2b(payload, digest_size=16).digest(), "key:test", "http")
