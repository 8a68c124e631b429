"""The README matches the code: commands, config reference, metrics, transform shapes."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.main import get_command

from scr.cli import app
from scr.config import config_reference
from scr.metrics import Metrics
from scr.route.transforms import EntryRef, resolve_transform
from scr.schema import decode_event

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def test_first_section_gives_the_two_commands() -> None:
    first = README.split("\n## ", 1)[0]
    assert "make run" in first and "make test" in first


def test_config_reference_is_the_generated_table() -> None:
    assert config_reference().strip() in README


def test_every_cli_command_is_documented() -> None:
    group = get_command(app)
    names = list(group.commands)  # type: ignore[attr-defined]
    for name in names:
        assert f"scr {name}" in README, f"`scr {name}` is not in the README"


def test_every_metric_is_documented() -> None:
    for metric in Metrics().registry.collect():
        assert metric.name.removeprefix("scr_destination") in README or metric.name in README, (
            f"metric {metric.name} is not in the README"
        )


def test_transform_examples_have_the_real_keys() -> None:
    event = decode_event((ROOT / "examples" / "event.json").read_bytes())
    entry = EntryRef(1042, 17, bytes(32))
    for name in ("billing_v1", "analytics_v2"):
        block = re.search(rf"\*\*`{name}`\*\*.*?```json\n(.*?)```", README, re.S)
        assert block, f"no example of {name} in the README"
        documented = json.loads(block.group(1))
        actual = resolve_transform(name)(event, entry)
        assert set(documented) == set(actual), name
        assert documented == json.loads(json.dumps(actual, default=str)), name


def test_decisions_example_runs_and_prints_what_the_readme_says(
    capsys: pytest.CaptureFixture[str],
) -> None:
    section = README.split("## Decisions", 1)[1]
    example = re.search(r"```python\n(.*?)```\nprints\n```\n(.*?)```", section, re.S)
    assert example, "the Decisions section lost its example"
    code, printed = example.groups()
    exec(compile(code, "README.md", "exec"), {})
    assert capsys.readouterr().out == printed


def test_every_route_is_in_the_openapi_document(tmp_path: Path) -> None:
    from scr.config import default_config
    from scr.openapi import document
    from scr.server import create_app

    documented = set(document()["paths"])
    app = create_app(default_config(), tmp_path / "data")
    served = {route.path for route in app.routes} - {"/openapi.json"}  # type: ignore[attr-defined]
    assert served <= documented, f"not in /openapi.json: {sorted(served - documented)}"
