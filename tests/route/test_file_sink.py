"""The file destination after a crash: a half-written last line is cut before appending."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from scr.route.sinks import FileSink


def test_a_torn_last_line_is_cut_and_the_file_stays_json_lines(tmp_path: Path) -> None:
    path = tmp_path / "archive.jsonl"
    path.write_bytes(b'{"event_id": "evt_1"}\n{"event_id": "evt_2", "us')  # killed mid-write
    sink = FileSink(path)
    attempt = asyncio.run(sink.send(b"", [b'{"event_id": "evt_2"}'], {}))
    assert attempt.status == 200
    lines = path.read_text().splitlines()
    assert [json.loads(line)["event_id"] for line in lines] == ["evt_1", "evt_2"]


def test_whole_lines_are_kept(tmp_path: Path) -> None:
    path = tmp_path / "archive.jsonl"
    path.write_bytes(b'{"event_id": "evt_1"}\n')
    asyncio.run(FileSink(path).send(b"", [b'{"event_id": "evt_2"}'], {}))
    assert path.read_text() == '{"event_id": "evt_1"}\n{"event_id": "evt_2"}\n'
