"""``GET /`` and its files: served without a key, small, uPlot vendored as released (with its
licence), packaged as scr's package data; and ``GET /v1/budgets``."""

from __future__ import annotations

import hashlib
import re
import tomllib
from datetime import UTC, datetime
from decimal import Decimal
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

import pytest

from scr.dashboard.routes import STATIC_FILES
from scr.testing.usage import month_of_usage, write_usage
from scr.usage.windows import utc_minute

ROOT = Path(__file__).parents[2]
STATIC = ROOT / "src" / "scr" / "dashboard" / "static"
MAX_PAGE_BYTES = 150 * 1024  # the page weight target
UPLOT_SUMS = {  # /work/shared/vendor/uplot-1.6.32/SHA256SUMS, as released
    "LICENSE": "8f989229699b4fe2f1a0432d0e9edc338a8a911e250e2d1b01ecd770a5f5b1bd",
    "uPlot.iife.min.js": "19c8d4c6ad88929a79f4ae49d6f7161566dfd0ba3d15cc495e974f787eb78f1f",
    "uPlot.min.css": "df630c6a8d6f8eeaff264b50f73ce5b114f646ffd9a0bb74f049b0a00135fa04",
}


def _loaded(html: str) -> list[str]:
    """The paths of every script and style sheet the page loads."""
    return re.findall(r'<(?:script|link)[^>]* (?:src|href)="([^"]+)"', html)


def test_the_page_needs_no_key_and_runs_only_its_own_files(serve: Any) -> None:
    client = serve()
    answer = client.get("/")
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "text/html; charset=utf-8"
    policy = answer.headers["content-security-policy"]
    assert "script-src 'self';" in policy and "connect-src 'self';" in policy
    assert '<input id="key" name="key" type="password"' in answer.text
    assert "<script>" not in answer.text  # nothing inline: the policy would refuse it
    loaded = _loaded(answer.text)
    assert sorted(loaded) == sorted(f"/dashboard/{name}" for name in STATIC_FILES if name != "LICENSE")
    for path in loaded:
        served = client.get(path)
        assert served.status_code == 200, path
        assert served.headers["content-type"] == STATIC_FILES[path.rsplit("/", 1)[1]]


def test_the_page_weighs_at_most_150_kb(serve: Any) -> None:
    client = serve()
    html = client.get("/").content
    weight = len(html) + sum(len(client.get(path).content) for path in _loaded(html.decode()))
    assert weight <= MAX_PAGE_BYTES, f"the page weighs {weight} bytes"


@pytest.mark.parametrize("name", ["index.html", "nope.js", "..%2Fdashboard.js", "SHA256SUMS", "LICENSE.txt"])
def test_a_file_the_page_does_not_have_is_404(serve: Any, name: str) -> None:
    client = serve()
    answer = client.get(f"/dashboard/{name}")
    assert answer.status_code == 404
    assert answer.json()["error"]["code"] == "not_found"


def test_uplot_is_vendored_as_released_with_its_licence(serve: Any) -> None:
    vendored = STATIC / "vendor"
    sums = dict(reversed(line.split("  ")) for line in (vendored / "SHA256SUMS").read_text().splitlines())
    for name, digest in UPLOT_SUMS.items():
        assert sums[name] == digest
        assert hashlib.sha256((vendored / name).read_bytes()).hexdigest() == digest, name
    licence = serve().get("/dashboard/LICENSE")
    assert licence.status_code == 200 and "The MIT License" in licence.text
    assert "Leon Sorokin" in licence.text


def test_every_file_of_the_page_is_package_data() -> None:
    """So the page works from a wheel: pyproject's package-data covers each file."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = pyproject["tool"]["setuptools"]["package-data"]["scr.dashboard"]
    files = [path.relative_to(STATIC.parent).as_posix() for path in STATIC.rglob("*") if path.is_file()]
    assert len(files) >= len(STATIC_FILES) + 1  # the page, its files, uPlot's sums
    assert [f for f in files if not any(fnmatch(f, pattern) for pattern in patterns)] == []


# ----- GET /v1/budgets ------------------------------------------------------------------------

BUDGETS = """session_completion_runtime:
  routing:
    destinations:
      - {name: alerts, type: file, path: alerts.jsonl, transform: audit_v1}
  usage:
    budgets:
      - {tenant: org_alpha, period: month, limit_usd: "250.00", alert_at: [0.5, 1.0], destinations: [alerts]}
      - {tenant: org_alpha, period: day, limit_usd: "9.5", destinations: [alerts]}
"""


def test_budgets_show_the_tenants_limits_and_the_exact_spend_of_their_period(
    serve: Any, data_dir: Path
) -> None:
    now = datetime.now(UTC)
    this_hour = utc_minute(now.replace(minute=0, second=0, microsecond=0))
    rows = month_of_usage("org_alpha", ["model-a", "model-b"], this_hour, "0.0000031")
    rows += month_of_usage("org_beta", ["model-c"], this_hour, "0.5")
    write_usage(data_dir, rows)
    client = serve(BUDGETS)
    answer = client.get("/v1/budgets", headers=client.key("org_alpha", "read"))
    assert answer.status_code == 200, answer.text
    month_start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    day_start = now.replace(hour=0, minute=0, second=0, microsecond=0)

    def spent(since: datetime) -> str:
        return format(sum((Decimal(r.cost_usd) for r in rows
                           if r.tenant == "org_alpha" and r.minute >= utc_minute(since)), Decimal(0)), "f")

    month, day = answer.json()["budgets"]
    assert Decimal(month.pop("spent_usd")) == Decimal(spent(month_start))
    assert month == {"period": "month", "limit_usd": "250.00", "alert_at": [0.5, 1.0],
                     "period_start": month_start.isoformat().replace("+00:00", "Z"),
                     "period_end": month["period_end"]}
    assert (day["period"], day["limit_usd"], day["alert_at"]) == ("day", "9.5", [0.8, 1.0])
    assert Decimal(day["spent_usd"]) == Decimal(spent(day_start))
    assert client.get("/v1/budgets", headers=client.key("org_beta", "admin")).json() == {"budgets": []}
    assert client.get("/v1/budgets", headers=client.key("org_alpha", "ingest")).status_code == 403
    assert client.get("/v1/budgets").status_code == 401
