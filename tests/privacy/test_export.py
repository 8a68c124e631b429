"""A subject's export: every event of the user with its leaf, salt and inclusion proof,
checked offline by ``scr ledger verify --export``."""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from conftest import Client
from privacy.test_encryption import MESSAGE, USER, key_file, personal_event, sealed_config  # noqa: F401
from scr.ledger.audit import audit
from scr.ledger.report import EXIT_TAMPERED, EXIT_VERIFIED
from scr.ledger.sources import HttpSource
from support import make_event, run_scr

OTHER = "bob.builder@example.com"

pytestmark = pytest.mark.every_store  # the serve tests run on SQLite and on PostgreSQL


def exported(client: Client, tmp_path: Path) -> tuple[dict[str, object], Path]:
    answer = client.get(f"/v1/subjects/{USER}/export", headers=client.key(role="admin"))
    assert answer.status_code == 200, answer.text
    path = tmp_path / "export.json"
    path.write_bytes(answer.content)
    body: dict[str, object] = answer.json()
    return body, path


def verified(path: Path) -> tuple[int, str]:
    result = run_scr("ledger", "verify", "--export", str(path), check=False)
    return result.returncode, result.stdout + result.stderr


def test_an_export_holds_every_event_of_the_user_and_verifies_offline(
    serve: Callable[..., Client], key_file: Path, tmp_path: Path  # noqa: F811
) -> None:
    client = serve(sealed_config(key_file))
    events = [personal_event(f"evt_{n}") for n in range(3)] + [personal_event("evt_b", user=OTHER)]
    assert client.post("/v1/events", json=events, headers=client.key()).status_code == 202
    body, path = exported(client, tmp_path)
    assert set(body) == {"user_id", "tenant", "public_key", "checkpoint", "events"}
    assert body["user_id"] == USER
    items = body["events"]
    assert isinstance(items, list) and [i["event"]["event_id"] for i in items] == ["evt_0", "evt_1", "evt_2"]
    assert all(i["event"]["outcome"]["final_message"] == MESSAGE and i["salt"] for i in items)
    code, output = verified(path)
    assert code == EXIT_VERIFIED, output

    def tampered(change: Callable[[dict[str, object]], None], expected: str) -> None:
        copy = json.loads(path.read_text())
        change(copy["events"][1])
        altered = tmp_path / "altered.json"
        altered.write_text(json.dumps(copy))
        code, output = verified(altered)
        assert code == EXIT_TAMPERED and expected in output, output

    tampered(lambda i: i["event"]["outcome"].update(final_message="something else"),  # type: ignore[attr-defined]
             "do not match the leaf's commitment")
    tampered(lambda i: i["event"]["usage"].update(model="another-model"),  # type: ignore[attr-defined]
             "differs from what the leaf records")
    tampered(lambda i: i.update(leaf_index=0), "not in the checkpoint's tree")


def test_an_export_after_erasure_lists_the_events_erased_and_still_verifies(
    serve: Callable[..., Client], key_file: Path, tmp_path: Path  # noqa: F811
) -> None:
    client = serve(sealed_config(key_file))
    assert client.post("/v1/events", json=[personal_event("evt_1")], headers=client.key()).status_code == 202
    assert client.delete(f"/v1/subjects/{USER}", headers=client.key(role="admin")).status_code == 202
    body, path = exported(client, tmp_path)
    (item,) = body["events"]  # type: ignore[misc]
    assert item["event"]["erased"] is True and item["salt"] is None
    assert USER not in json.dumps(item["event"]) and MESSAGE not in path.read_text()
    code, output = verified(path)
    assert code == EXIT_VERIFIED, output


def test_an_export_is_refused_clearly(
    serve: Callable[..., Client], key_file: Path  # noqa: F811
) -> None:
    client = serve(sealed_config(key_file))
    assert client.post("/v1/events", json=[personal_event("evt_1")], headers=client.key()).status_code == 202
    for role in ("ingest", "read", "auditor"):
        assert client.get(f"/v1/subjects/{USER}/export", headers=client.key(role=role)).status_code == 403
    admin = client.key(role="admin")
    assert client.get("/v1/subjects/nobody/export", headers=admin).status_code == 404
    other_tenant = client.key(tenant="org_other", role="admin")
    assert client.get(f"/v1/subjects/{USER}/export", headers=other_tenant).status_code == 404


def test_an_audit_checks_sealed_leaves_as_it_checks_the_others(
    serve: Callable[..., Client], key_file: Path  # noqa: F811
) -> None:
    client = serve(sealed_config(key_file))
    assert client.post("/v1/events", json=[make_event("evt_plain")], headers=client.key()).status_code == 202
    sealed = [personal_event(f"evt_{n}") for n in range(20)]
    assert client.post("/v1/events", json=sealed, headers=client.key()).status_code == 202
    auditor = TestClient(client.app, headers=client.key(role="auditor"))
    outcome = audit(HttpSource(auditor), None, samples=100, rng=random.Random(7))
    assert outcome.report.exit_code == 0, outcome.report
    assert outcome.report.entries >= 21  # every leaf, sealed or not, proven in the tree


def test_an_export_carries_content_opened_and_verifies_offline(
    serve: Callable[..., Client], key_file: Path, tmp_path: Path  # noqa: F811
) -> None:
    client = serve(sealed_config(key_file))
    content = {"user_request": "Cancel my plan.", "tool_outputs": ["plan p_9 cancelled", "ok"]}
    event = make_event("evt_content", **{"user.user_id": USER}, content=content)
    assert client.post("/v1/events", json=event, headers=client.key()).status_code == 202
    body, path = exported(client, tmp_path)
    (item,) = body["events"]  # type: ignore[misc]
    assert item["event"]["content"] == content
    code, output = verified(path)
    assert code == EXIT_VERIFIED, output
    altered = json.loads(path.read_text())
    altered["events"][0]["event"]["content"]["tool_outputs"][1] = "not ok"
    (tmp_path / "altered.json").write_text(json.dumps(altered))
    code, output = verified(tmp_path / "altered.json")
    assert code == EXIT_TAMPERED and "do not match the leaf's commitment" in output, output
