"""The subjects' keys in the store: made once per subject and generation, forgotten when the
group that made them fails, and a cache that starts over when full."""

from __future__ import annotations

from pathlib import Path

import pytest

from scr.privacy import subjects as module
from scr.privacy.master import MasterKey
from scr.privacy.subjects import KeyRing, Subjects
from scr.store.sqlite import SqliteStore


def test_a_key_is_made_once_kept_when_its_group_commits_and_forgotten_when_it_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(module, "MAX_CACHED_KEYS", 2)
    store = SqliteStore(tmp_path / "data")
    tx = store.writer()
    try:
        subjects = Subjects.open(store, MasterKey(bytes(32)))
        ring = KeyRing(subjects)
        tx.begin(durable=True)
        made = {name: ring.key_for(tx, "org_a", name) for name in ("s1", "s2", "s3")}  # past the cap
        assert ring.key_for(tx, "org_a", "s3") is made["s3"]
        tx.commit()
        ring.settle(committed=True)
        assert {g for g in store.subject_keys("org_a", "s1")} == {1}
        # a group that fails: its new key is forgotten, and made again (stored) next time
        tx.begin(durable=True)
        lost = ring.key_for(tx, "org_a", "s4")
        tx.rollback()
        ring.settle(committed=False)
        assert store.subject_keys("org_a", "s4") == {}
        tx.begin(durable=True)
        again = ring.key_for(tx, "org_a", "s4")
        tx.commit()
        ring.settle(committed=True)
        assert again.key != lost.key and set(store.subject_keys("org_a", "s4")) == {1}
        # a new process reads the same key back
        assert KeyRing(subjects).key_for(tx, "org_a", "s1").key == made["s1"].key
    finally:
        tx.close()
        store.close()
