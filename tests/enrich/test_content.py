"""The event's optional ``content`` (text for enrichment): its bad inputs refused like any
field's, kept by ``audit_v1`` and dropped by ``billing_v1`` and ``analytics_v2``, sealed as
personal data with a master key, and null once its subject is erased."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from privacy.test_encryption import key_file, sealed_config, stored_entries

from conftest import Client
from support import make_event, wait_for

__all__ = ["key_file"]  # the master key fixture

CONTENT = {"user_request": "Please refund the duplicate charge on my Visa",
           "summary": "The user asked for a refund of a double charge",
           "tool_outputs": ["refund issued: re_4411", "ticket closed"]}
DESTINATIONS = """\
      - {name: audit, type: file, path: audit.jsonl, transform: audit_v1}
      - {name: billing, type: file, path: billing.jsonl, transform: billing_v1}
      - {name: analytics, type: file, path: analytics.jsonl, transform: analytics_v2}"""


def with_content(event_id: str, content: Any) -> dict[str, Any]:
    event = make_event(event_id)
    event["content"] = content
    return event


@pytest.mark.parametrize(("content", "path", "code"), [
    (None, "$.content", "invalid_type"),
    ({"user_request": None}, "$.content.user_request", "invalid_type"),
    ({"summary": 42}, "$.content.summary", "invalid_type"),
    ({"tool_outputs": "one"}, "$.content.tool_outputs", "invalid_type"),
    ({"tool_outputs": ["ok", None]}, "$.content.tool_outputs[1]", "invalid_type"),
    ({"tool_outputs": ["x"] * 65}, "$.content.tool_outputs", "invalid_value"),
    ({"user_request": "é" * 16_385}, "$.content.user_request", "invalid_value"),  # 32,770 bytes
    ({"tool_outputs": ["ok", "😀" * 8_193]}, "$.content.tool_outputs[1]", "invalid_value"),
    ({"notes": "x"}, "$.content.notes", "unknown_field"),
    ("text", "$.content", "invalid_type"),
])
def test_bad_content_is_refused_and_nothing_is_stored(
        serve: Callable[..., Client], content: Any, path: str, code: str) -> None:
    client = serve()
    ingest, reader = client.key(), client.key(role="read")
    refused = client.post("/v1/events", json=with_content("evt_bad", content), headers=ingest)
    assert refused.status_code == 400, refused.text
    error = refused.json()["error"]
    assert (error["code"], error["details"][0]["path"]) == (code, path), error
    assert client.get("/v1/events/evt_bad", headers=reader).status_code == 404
    fine = client.post("/v1/events", json=with_content("evt_fine", CONTENT), headers=ingest)
    assert fine.status_code == 202  # the service is up


def test_content_at_its_limits_is_accepted_and_an_event_over_256_kib_is_not(
        serve: Callable[..., Client]) -> None:
    client = serve()
    ingest = client.key()
    limit = {"user_request": "é" * 16_384, "tool_outputs": ["x"] * 64}  # 32,768 bytes exactly
    assert client.post("/v1/events", json=with_content("evt_limit", limit), headers=ingest).status_code == 202
    huge = {"tool_outputs": ["a" * 32_768] * 9}  # each string within its limit, the event not
    assert client.post("/v1/events", json=with_content("evt_huge", huge), headers=ingest).status_code == 413


def test_audit_keeps_content_and_billing_and_analytics_drop_it(serve: Callable[..., Client]) -> None:
    client = serve("session_completion_runtime:\n  routing:\n    destinations:\n" + DESTINATIONS + "\n")
    sent = client.post("/v1/events", json=with_content("evt_c", CONTENT), headers=client.key())
    assert sent.status_code == 202
    files = {name: client.data / f"{name}.jsonl" for name in ("audit", "billing", "analytics")}
    wait_for(lambda: all(path.exists() and path.read_text().endswith("\n") for path in files.values()),
             what="each destination's line")
    audit = json.loads(files["audit"].read_text().splitlines()[0])
    assert audit["event"]["content"] == CONTENT
    for name in ("billing", "analytics"):
        text = files[name].read_text()
        assert "content" not in json.loads(text.splitlines()[0]) and "refund" not in text


def test_sealed_content_is_not_in_the_ledger_reads_back_whole_and_is_null_once_erased(
        serve: Callable[..., Client], key_file: Path) -> None:
    client = serve(sealed_config(key_file))
    ingest, reader, admin = client.key(), client.key(role="read"), client.key(role="admin")
    sent = with_content("evt_sealed", CONTENT)
    assert client.post("/v1/events", json=sent, headers=ingest).status_code == 202
    assert client.get("/v1/events/evt_sealed", headers=reader).json()["event"]["content"] == CONTENT
    for entry in stored_entries(client):
        for text in (CONTENT["user_request"], CONTENT["summary"], *CONTENT["tool_outputs"]):
            assert text.encode() not in entry, text
    user = sent["user"]["user_id"]
    assert client.delete(f"/v1/subjects/{user}", headers=admin).status_code == 202
    erased = client.get("/v1/events/evt_sealed", headers=reader).json()["event"]
    assert erased["erased"] is True
    assert erased["content"] == {"user_request": None, "summary": None, "tool_outputs": [None, None]}
