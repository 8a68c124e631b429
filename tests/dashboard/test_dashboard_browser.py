"""End to end in headless Chromium (``tests/browser.py``): the dashboard of a real ``scr serve``
with two tenants whose usage is recognisable (their own model names). A key typed in shows its
tenant's charts and numbers, never the other's; live numbers move when events are posted; a
wrong key shows the error and nothing else; no requested URL ever holds a key. The page is
kept as a screenshot in ``test-artifacts/dashboard.png``."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import expect

from browser import BROWSER_TIMEOUT_MS, chromium
from scr.testing.usage import month_of_usage, write_anomaly, write_usage
from scr.usage.windows import utc_minute
from support import ServerProcess, create_key, make_event

ARTIFACTS = Path(__file__).parents[2] / "test-artifacts"
MODELS = {"org_alpha": ["model-alpha-only", "model-alpha-mini"], "org_beta": ["model-beta-only"]}
CONFIG = """session_completion_runtime:
  server: {workers: 1}
  routing:
    destinations:
      - {name: alerts, type: file, path: alerts.jsonl, transform: audit_v1}
  usage:
    budgets:
      - {tenant: org_alpha, period: month, limit_usd: "75.00", destinations: [alerts]}
"""


@dataclass
class Dashboard:
    scr: ServerProcess
    browser: Any
    keys: dict[str, str]  # tenant -> read key
    ingest: dict[str, str]  # tenant -> ingest key
    requested: list[str] = field(default_factory=list)  # every URL any page asked for

    def open(self, key: str) -> Any:
        """A new page of the dashboard with ``key`` typed in and submitted."""
        page = self.browser.new_page(viewport={"width": 1200, "height": 1500})
        page.set_default_timeout(BROWSER_TIMEOUT_MS)
        page.on("request", lambda request: self.requested.append(request.url))
        page.goto(self.scr.url + "/")
        page.fill("#key", key)
        page.click("#signin button")
        return page

    def post(self, tenant: str, count: int, word: str) -> None:
        events = [make_event(f"evt_{word}_{n}", **{"user.organization_id": tenant,
                                                   "session.session_id": f"sess_{word}_{n}"})
                  for n in range(count)]
        answer = httpx.post(f"{self.scr.url}/v1/events", json=events,
                            headers={"authorization": f"Bearer {self.ingest[tenant]}"})
        assert answer.status_code == 202, answer.text


@pytest.fixture(scope="module")
def dashboard(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dashboard]:
    folder = tmp_path_factory.mktemp("dashboard")
    data = folder / "data"
    this_hour = utc_minute(datetime.now(UTC).replace(minute=0, second=0, microsecond=0))
    write_usage(data, [row for tenant, models in MODELS.items()
                       for row in month_of_usage(tenant, models, this_hour)])
    write_anomaly(data, "org_alpha", "cost_usd", this_hour - 5 * 60, "9.5000000000", "0.0030000000")
    config = folder / "scr.yaml"
    config.write_text(CONFIG)
    keys = {tenant: create_key(data, tenant, "read") for tenant in MODELS}
    ingest = {tenant: create_key(data, tenant, "ingest") for tenant in MODELS}
    scr = ServerProcess(data, config).start()
    try:
        with chromium() as browser:
            yield Dashboard(scr, browser, keys, ingest)
    finally:
        scr.stop()


def _shown(page: Any) -> str:
    return str(page.inner_text("body"))


def test_a_key_shows_its_tenants_charts_and_numbers_and_no_other(dashboard: Dashboard) -> None:
    dashboard.post("org_beta", 5, "beta")
    for tenant, other in (("org_alpha", "org_beta"), ("org_beta", "org_alpha")):
        page = dashboard.open(dashboard.keys[tenant])
        page.wait_for_selector("body[data-charts=drawn]")
        expect(page.locator("#tenant")).to_have_text(tenant)
        shown = _shown(page)
        for model in MODELS[tenant]:
            assert model in shown  # in the charts' legends
        for word in (other, *MODELS[other]):
            assert word not in shown and word not in page.content()
        assert page.locator("#chart-cost canvas").count() == 1
        assert page.locator("#chart-tokens canvas").count() == 1
        assert "Verified in this browser (WebCrypto Ed25519)" in page.inner_text("#checkpoint-check")
        if tenant == "org_alpha":  # its anomaly is listed (and marked on the cost chart)
            assert "cost_usd: 9.5000000000 (expected 0.0030000000)" in page.inner_text("#anomalies")
        else:
            assert "none in this range" in page.inner_text("#anomalies")
        if tenant == "org_alpha":
            assert "75.00" in page.inner_text("#budgets")
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)
        else:
            assert page.inner_text("#accepted") == "5"
            assert "no budget configured" in page.inner_text("#budgets")
        assert dashboard.keys[tenant] not in page.content()  # the field was emptied
        page.close()


def test_live_numbers_move_when_events_are_posted(dashboard: Dashboard) -> None:
    page = dashboard.open(dashboard.keys["org_alpha"])
    expect(page.locator("#accepted")).to_have_text("0")
    dashboard.post("org_alpha", 3, "alpha_live")
    expect(page.locator("#accepted")).to_have_text("3")  # no eval: the page's policy forbids it
    assert page.inner_text("#acceptance") == "100.0 %"
    assert page.inner_text("#live-state") == "live"
    page.close()


def test_a_wrong_key_shows_the_error_and_nothing_else(dashboard: Dashboard) -> None:
    page = dashboard.open("scr_this_is_not_a_key")
    page.wait_for_selector("#error", state="visible")
    assert "This key was refused (401" in page.inner_text("#error")
    assert page.locator("#board").is_hidden()
    assert page.locator("canvas").count() == 0
    assert set(page.locator(".numbers b").all_inner_texts()) == {"–"}
    shown = _shown(page)
    for tenant, models in MODELS.items():
        assert tenant not in shown and not any(model in shown for model in models)
    page.close()


def test_no_requested_url_holds_a_key(dashboard: Dashboard) -> None:
    page = dashboard.open(dashboard.keys["org_alpha"])
    page.wait_for_selector("body[data-charts=drawn]")
    page.close()
    assert any("/v1/dashboard/live" in url for url in dashboard.requested)
    assert any("/v1/usage?" in url for url in dashboard.requested)
    keys = [*dashboard.keys.values(), *dashboard.ingest.values(), "scr_this_is_not_a_key"]
    assert [url for url in dashboard.requested if any(key in url for key in keys)] == []
