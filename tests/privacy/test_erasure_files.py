"""Erasure on the embedded store: within 10 s no file of the data folder holds the erased
subject's wrapped key (the writer zeroes what it overwrites, the WAL is emptied). On
PostgreSQL the files are the server's; the store vacuums the keys' table instead."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

from conftest import Client
from privacy.test_encryption import USER, key_file, personal_event, sealed_config  # noqa: F401
from support import wait_for


def test_no_file_of_the_data_folder_keeps_the_erased_key(
    serve: Callable[..., Client], key_file: Path  # noqa: F811
) -> None:
    client = serve(sealed_config(key_file))
    assert client.post("/v1/events", json=personal_event("evt_1"), headers=client.key()).status_code == 202
    with sqlite3.connect(client.data / "scr.db") as conn:
        (wrapped,) = conn.execute("SELECT wrapped FROM subject_keys").fetchone()

    def nowhere() -> bool:
        files = [path for path in client.data.rglob("*") if path.is_file()]
        return all(bytes(wrapped) not in path.read_bytes() for path in files)

    assert not nowhere()  # the key is on disk before
    assert client.delete(f"/v1/subjects/{USER}", headers=client.key(role="admin")).status_code == 202
    wait_for(nowhere, timeout_s=10, what="no file holding the erased key")
