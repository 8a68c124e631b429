"""``scr ledger export`` and ``verify --bundle``: evidence that verifies with no server."""

from __future__ import annotations

import base64
import json
import shutil
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from ledger.conftest import Headers, LedgerApp, StartApp
from scr.ledger.bundle import encode_bundle, export_bundle, ledger_time, verify_bundle
from scr.ledger.sources import DataSource, HttpSource, SourceError
from scr.log.checkpoint import Signer
from support import run_scr


@pytest.fixture
def three_groups(start_app: StartApp, data_dir: Path) -> tuple[LedgerApp, Headers, list[str]]:
    """Three group commits (so three append times) of org_acme, checkpointed; their first ids' times."""
    app = start_app(data_dir)
    headers = app.key()
    times = []
    for group in "abc":
        app.post(headers, [f"{group}_{i}" for i in range(20)])
        times.append(app.client.get(f"/v1/events/{group}_0", headers=headers).json()["ledger"]["ts"])
    app.checkpoint(headers)
    return app, headers, times


def test_a_time_range_exports_exactly_its_entries_over_http(
    three_groups: tuple[LedgerApp, Headers, list[str]],
) -> None:
    app, headers, times = three_groups
    source = HttpSource(TestClient(app.client.app, headers=headers))
    bundle = export_bundle(source, "org_acme", ledger_time(times[1]), ledger_time(times[2]))
    assert [e.event_id for e in bundle.entries] == [f"b_{i}" for i in range(20)]
    assert [e.index for e in bundle.entries] == list(range(21, 41))
    report = verify_bundle(encode_bundle(bundle))
    assert report.exit_code == 0 and report.entries == 20


def test_an_offline_export_verifies_on_a_machine_without_the_server(
    three_groups: tuple[LedgerApp, Headers, list[str]], tmp_path: Path,
) -> None:
    app, headers, _ = three_groups
    key = app.client.get("/v1/ledger/public-key", headers=headers).text.strip()
    app.stop()
    bundle = tmp_path / "evidence.json"
    run_scr("ledger", "export", "--data", str(app.data), "--tenant", "org_acme", str(bundle))
    elsewhere = tmp_path / "auditor"
    elsewhere.mkdir()
    copy = shutil.copy(bundle, elsewhere / "evidence.json")
    shutil.rmtree(app.data)  # nothing of the server is left
    checked = run_scr("ledger", "verify", "--bundle", str(copy), "--verifier-key", key)
    assert "verified" in checked.stdout and "61 entries" in checked.stdout


def tampered(bundle: dict[str, object], index: int) -> bytes:
    entries = bundle["entries"]
    assert isinstance(entries, list)
    leaf = bytearray(base64.b64decode(entries[index]["leaf"]))
    leaf[leaf.index(b"success")] ^= 0x20  # "Success"
    entries[index]["leaf"] = base64.b64encode(bytes(leaf)).decode()
    return json.dumps(bundle).encode()


def test_a_changed_bundle_names_its_entry_and_another_key_is_rejected(
    three_groups: tuple[LedgerApp, Headers, list[str]], tmp_path: Path,
) -> None:
    app, _, _ = three_groups
    raw = encode_bundle(export_bundle(DataSource(app.data), "org_acme", None, None))
    report = verify_bundle(tampered(json.loads(raw), 5))
    assert report.exit_code == 1
    assert str(report.findings[0]).startswith(
        "tenant org_acme, entry 5 (event a_4): not in the checkpoint's tree"
    )
    other = Signer.load_or_create(tmp_path / "other.pem", "scr").verifier_key()
    rejected = verify_bundle(raw, other)
    assert rejected.exit_code == 1 and "checkpoint is rejected" in rejected.findings[0].problem
    path = tmp_path / "bad.json"
    path.write_bytes(tampered(json.loads(raw), 5))
    failed = run_scr("ledger", "verify", "--bundle", str(path), check=False)
    assert failed.returncode == 1 and "entry 5 (event a_4)" in failed.stderr


def test_unreadable_bundles_and_bad_times_cannot_be_verified(tmp_path: Path) -> None:
    assert verify_bundle(b"{not json").exit_code == 2
    assert verify_bundle(b'{"format": "other/9"}').exit_code == 2
    with pytest.raises(ValueError, match="no time zone"):
        ledger_time("2026-11-25T10:00:00")
    assert ledger_time("2026-11-25T11:00:00+01:00") == "2026-11-25T10:00:00.000000Z"
    bad = run_scr("ledger", "export", "--data", str(tmp_path), "--tenant", "org_acme", "--from", "yesterday",
                  str(tmp_path / "x.json"), check=False)
    assert bad.returncode == 2 and "RFC 3339" in bad.stderr
    nothing = run_scr("ledger", "export", "--data", str(tmp_path), "--tenant", "org_acme",
                      str(tmp_path / "x.json"), check=False)
    assert nothing.returncode == 2 and "no scr.db" in nothing.stderr


def test_exporting_another_tenant_than_the_keys_is_refused(
    three_groups: tuple[LedgerApp, Headers, list[str]],
) -> None:
    app, headers, _ = three_groups
    source = HttpSource(TestClient(app.client.app, headers=headers), "org_other")
    with pytest.raises(SourceError, match="not of tenant 'org_other'"):
        export_bundle(source, "org_other", None, None)
