"""The ``scr`` command line, run as a user runs it."""

from __future__ import annotations

import importlib
import json
import sqlite3
import subprocess
import sys
from pathlib import Path

from scr.cli import SUB_APPS
from support import ServerProcess, create_key, make_event, run_scr


def test_help_lists_every_verb() -> None:
    out = run_scr("--help").stdout
    for verb in ("serve", "send", "keys", "config", "schema"):
        assert verb in out


def test_help_lists_each_sub_app_by_its_own_help() -> None:
    for name, (module, help_text) in SUB_APPS.items():
        assert importlib.import_module(module).app.info.help == help_text, name


def test_help_imports_no_sub_app_nor_heavy_package() -> None:
    """Every ``scr`` the suite runs pays for what ``scr.cli`` imports: numpy, the ledger,
    httpx load only in the commands that use them."""
    code = ("import sys\nfrom typer.testing import CliRunner\nfrom scr.cli import app\n"
            "assert CliRunner().invoke(app, ['--help']).exit_code == 0\nprint(*sys.modules)")
    loaded = set(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                check=True).stdout.split())
    heavy = {"numpy", "httpx", "nats", "psycopg", "scr.config", *(module for module, _ in SUB_APPS.values())}
    assert not heavy & loaded


def test_keys_create_prints_the_key_last_and_stores_only_its_hash(tmp_path: Path) -> None:
    data = tmp_path / "data"
    result = run_scr("keys", "create", "--data", str(data), "--tenant", "org_acme", "--role", "admin")
    key = result.stdout.strip().splitlines()[-1]
    assert key.startswith("scr_")
    raw = b"".join(p.read_bytes() for p in data.iterdir())
    assert key.encode() not in raw
    with sqlite3.connect(data / "scr.db") as db:
        (role,) = db.execute("SELECT role FROM api_keys").fetchone()
    assert role == "admin"


def test_keys_create_rejects_bad_role_and_tenant(tmp_path: Path) -> None:
    data = str(tmp_path / "data")
    bad_role = run_scr("keys", "create", "--data", data, "--tenant", "org", "--role", "root", check=False)
    assert bad_role.returncode == 2 and "unknown role" in bad_role.stderr
    bad_tenant = run_scr("keys", "create", "--data", data, "--tenant", "a b", "--role", "read", check=False)
    assert bad_tenant.returncode == 2 and "tenant" in bad_tenant.stderr


def test_schema_prints_json_schema() -> None:
    schema = json.loads(run_scr("schema").stdout)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    event = schema["$defs"]["Event"]
    assert set(event["required"]) >= {"event_type", "event_id", "timestamp", "session", "usage"}


def test_config_check_reports_every_error_with_lines(tmp_path: Path) -> None:
    good = run_scr("config", "check", "examples/source-document.yaml")
    assert "ok" in good.stdout and "billing_system" in good.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "session_completion_runtime:\n"
        "  capture: {buffer_size: -1}\n"
        "  routing:\n"
        "    destinations:\n"
        "      - {name: a, endpoint: 'https://x', retries: 3}\n"
    )
    result = run_scr("config", "check", str(bad), check=False)
    assert result.returncode == 1
    assert "line 2" in result.stderr and "buffer_size" in result.stderr
    assert "line 5" in result.stderr and "retries" in result.stderr


def test_send_posts_ndjson_with_a_summary(tmp_path: Path) -> None:
    data = tmp_path / "data"
    key = create_key(data)
    events = [make_event(f"evt_{i}") for i in range(2500)]
    events.append(make_event("evt_bad", **{"usage.total_tokens": 1}))
    source = tmp_path / "events.ndjson"
    source.write_text("\n".join(json.dumps(e) for e in events))
    server = ServerProcess(data).start()
    try:
        result = run_scr("send", str(source), "--url", server.url, "--key", key, check=False)
        assert result.returncode == 1  # one event was rejected
        assert "2500 accepted, 0 duplicate, 1 rejected" in result.stdout
        assert "$.usage.total_tokens" in result.stderr
        again = run_scr("send", "-", "--url", server.url, "--key", key,
                        input=json.dumps(events[:10]))
        assert "0 accepted, 10 duplicate, 0 rejected" in again.stdout
    finally:
        server.stop()


def test_send_without_a_server_fails_clearly(tmp_path: Path) -> None:
    source = tmp_path / "e.json"
    source.write_text(json.dumps(make_event()))
    result = run_scr("send", str(source), "--url", "http://127.0.0.1:9", check=False)
    assert result.returncode == 2 and "cannot reach" in result.stderr
