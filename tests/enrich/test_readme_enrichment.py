"""The README's Enrichment example runs as written against a real ``scr serve``, and the
sessions it asks about come back as the README says."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest

from enrich.test_enrich_process import CONFIG, caught_up
from support import ServerProcess, create_key, wait_for

ROOT = Path(__file__).resolve().parents[2]
SECTION = (ROOT / "README.md").read_text().split("## Enrichment\n", 1)[1].split("\n## ", 1)[0]


def test_the_example_sends_sessions_whose_similar_ones_are_as_shown(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    example = re.search(r"```python\n(.*?)```", SECTION, re.S)
    assert example, "the Enrichment section lost its example"
    data = tmp_path / "data"
    ingest, reader = create_key(data), create_key(data, role="read")
    config = tmp_path / "scr.yaml"
    config.write_text(CONFIG)
    server = ServerProcess(data, config).start()
    try:
        monkeypatch.setenv("SCR_URL", server.url)
        monkeypatch.setenv("SCR_KEY", ingest)
        monkeypatch.chdir(ROOT)  # the example reads examples/event.json
        exec(compile(example.group(1), "README.md", "exec"), {})
        wait_for(lambda: caught_up(server, reader, 3), timeout_s=60, what="the three sessions embedded")
        similar = httpx.get(f"{server.url}/v1/sessions/sess_enrich_1/similar", params={"k": 2},
                            headers={"authorization": f"Bearer {reader}"}).json()
    finally:
        server.stop()
    assert [found["session_id"] for found in similar["results"]] == ["sess_enrich_2", "sess_enrich_3"]
    assert similar["results"][0]["score"] > 0.5 > similar["results"][1]["score"]
