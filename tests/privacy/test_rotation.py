"""``scr keys rotate-master`` with the server running: every data key rewrapped, the old key
no longer needed, the running processes follow, and every bad start refused."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from privacy.test_encryption import MESSAGE, USER, personal_event, sealed_config
from scr.privacy.master import write_master_key
from support import ServerProcess, create_key, free_port, run_scr, wait_for

pytestmark = pytest.mark.every_store


def where(data: Path, store_uri: str | None) -> list[str]:
    return ["--store", store_uri] if store_uri else ["--data", str(data)]


@pytest.mark.slow
def test_a_rotation_with_the_server_running_keeps_every_event_readable(
    tmp_path: Path, store_uri: str | None
) -> None:
    data, config = tmp_path / "data", tmp_path / "scr.yaml"
    current, new = tmp_path / "master.key", tmp_path / "new.key"
    write_master_key(current)
    write_master_key(new)
    old_text = current.read_text()
    config.write_text(sealed_config(current))
    ingest, admin = create_key(data, store=store_uri), create_key(data, role="admin", store=store_uri)
    server = ServerProcess(data, config, store=store_uri).start()
    try:
        with httpx.Client(base_url=server.url, timeout=10) as http:
            def post(event_id: str, user: str) -> None:
                answer = http.post("/v1/events", json=[personal_event(event_id, user=user)],
                                   headers={"authorization": f"Bearer {ingest}"})
                assert answer.status_code == 202, answer.text

            def user_of(event_id: str) -> object:
                answer = http.get(f"/v1/events/{event_id}", headers={"authorization": f"Bearer {admin}"})
                return answer.json()["event"]["user"]["user_id"] if answer.status_code == 200 else answer.text

            post("evt_before", USER)
            assert user_of("evt_before") == USER
            rotated = run_scr("keys", "rotate-master", "--new", str(new), "--config", str(config),
                              *where(data, store_uri), check=False)
            assert rotated.returncode == 0, rotated.stdout + rotated.stderr
            assert current.read_text() == new.read_text() != old_text
            assert not (tmp_path / "master.key.rotating").exists()
            # the running processes take the new key from the file
            wait_for(lambda: user_of("evt_before") == USER, timeout_s=5, what="the old event opened")
            post("evt_after", "carol@example.com")  # a new subject: its key wrapped by the new one
            assert user_of("evt_after") == "carol@example.com"
            post("evt_again", USER)
            assert user_of("evt_again") == USER
            audit = http.get("/v1/audit", headers={"authorization": f"Bearer {admin}"}).json()["entries"]
            assert [e["details"] for e in audit if e["kind"] == "MASTER_KEY_ROTATED"] == [{"data_keys": 1}]
    finally:
        server.stop()
    # a restart with the new key reads everything; the old key is refused
    server = ServerProcess(data, config, store=store_uri).start()
    try:
        answer = httpx.get(f"{server.url}/v1/events/evt_before", headers={"authorization": f"Bearer {admin}"})
        assert answer.json()["event"]["outcome"]["final_message"] == MESSAGE
    finally:
        server.stop()
    (tmp_path / "old.key").write_text(old_text)
    config.write_text(sealed_config(tmp_path / "old.key"))
    refused = run_scr("serve", "--config", str(config), "--port", str(free_port()),
                      *where(data, store_uri), check=False)
    assert refused.returncode == 2
    assert "not the one this data was written with" in refused.stderr + refused.stdout


def test_a_rotation_that_cannot_be_done_changes_nothing(tmp_path: Path, store_uri: str | None) -> None:
    data, config = tmp_path / "data", tmp_path / "scr.yaml"
    current, new, wrong = tmp_path / "master.key", tmp_path / "new.key", tmp_path / "wrong.key"
    for path in (current, new, wrong):
        write_master_key(path)
    config.write_text(sealed_config(current))
    create_key(data, store=store_uri)
    server = ServerProcess(data, config, store=store_uri).start()  # sets the data up with `current`
    server.stop()
    before = current.read_text()
    (tmp_path / "bad.key").write_text("not a key\n")
    (tmp_path / "wrong.yaml").write_text(sealed_config(wrong))
    cases = {
        "no key configured": (["--new", str(new)], "no master key is configured"),
        "a malformed new key": (["--new", str(tmp_path / "bad.key"), "--config", str(config)], "not base64"),
        "another current key": (["--new", str(new), "--config", str(tmp_path / "wrong.yaml")],
                                "not the one this data was written with"),
    }
    for name, (args, message) in cases.items():
        result = run_scr("keys", "rotate-master", *args, *where(data, store_uri), check=False)
        assert result.returncode == 2 and message in result.stderr + result.stdout, (name, result.stderr)
    assert current.read_text() == before
    server = ServerProcess(data, config, store=store_uri).start()  # still the data's key
    server.stop()
