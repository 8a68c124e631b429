"""File destinations under load: the example config's files keep up with ingest."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import httpx

from scr.config import load_config
from support import ServerProcess, create_key, make_event, wait_for

ROOT = Path(__file__).resolve().parent.parent
EVENTS = 50_000
BATCH_EVENTS = 1_000
# Issue 14: every file of the example config holds every event this long after the last 202.
DELIVERED_WITHIN_S = 10.0
POST_TIMEOUT_S = 60.0


class LineCounter:
    """Counts the whole lines of a growing file, reading only what was appended since the
    last look (re-reading tens of MB per poll would compete with the server for the CPU)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.lines = 0

    def count(self) -> int:
        if self.path.exists():
            with self.path.open("rb") as file:
                file.seek(self.offset)
                appended = file.read()
            whole = appended.rfind(b"\n") + 1  # a line still being written is counted later
            self.lines += appended.count(b"\n", 0, whole)
            self.offset += whole
        return self.lines


def test_example_file_destinations_hold_every_event_soon_after_the_last_202(tmp_path: Path) -> None:
    config = tmp_path / "scr.yaml"
    shutil.copy(ROOT / "examples" / "scr.yaml", config)
    data = tmp_path / "data"
    destinations = load_config(config).routing.destinations
    files = [data / str(d.path) for d in destinations if d.type == "file"]
    assert len(files) == 3, "the example config lost its three file destinations"
    batches = [
        [make_event(f"evt_{b:03d}_{i:04d}", **{"session.session_id": f"sess_{b:03d}_{i:04d}"})
         for i in range(BATCH_EVENTS)]
        for b in range(EVENTS // BATCH_EVENTS)
    ]
    wanted = Counter(e["event_id"] for batch in batches for e in batch)
    key = create_key(data)
    server = ServerProcess(data, config).start()
    try:
        with httpx.Client(timeout=POST_TIMEOUT_S) as client:
            for batch in batches:
                response = client.post(f"{server.url}/v1/events", json=batch,
                                       headers={"authorization": f"Bearer {key}"})
                assert response.status_code == 202, response.text
        counters = [LineCounter(path) for path in files]
        wait_for(lambda: all(c.count() >= EVENTS for c in counters), timeout_s=DELIVERED_WITHIN_S,
                 what=f"{EVENTS} lines in each of {[p.name for p in files]}")
        for path in files:
            delivered = Counter(json.loads(line)["event_id"] for line in path.read_text().splitlines())
            assert delivered == wanted, f"{path.name}: not every event exactly once"
        assert httpx.get(f"{server.url}/readyz").status_code == 200
    finally:
        server.stop()
