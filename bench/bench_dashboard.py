"""The dashboard in headless Chromium over a month of one tenant's usage: first paint, the time
from the key's submission until every chart is drawn (48 hours by hour, then 30 days by day),
and the page weight; beside a baseline measured in the same run, a plain page of the same
server (``/dashboard/LICENSE``).

A month of usage is written straight into the store (``scr.testing.usage``: one row per hour
and model, ``MODELS`` models), as the usage process would have written it: ingesting a
month of events would take far longer than a benchmark may. Runs in about 20 s.
"""

from __future__ import annotations

import re
import statistics
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from bench.ingest import create_key, start, stop, wait_until_ready
from scr.testing.servers import free_port
from scr.testing.usage import month_of_usage, write_usage
from scr.usage.windows import utc_minute

TENANT = "org_bench"  # bench.ingest.create_key's tenant
MODELS = [f"model-{n:02d}" for n in range(12)]
LOADS = 5  # page loads per figure (the median is reported)
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
TIMEOUT_MS = 30_000

PAINTS = """() => Object.fromEntries(performance.getEntriesByType("paint")
                                     .map((p) => [p.name, p.startTime]))"""
# the page (HTML, scripts, style sheets) apart from what it reads from the API (fetch)
WEIGHT = """() => {
  const resources = performance.getEntriesByType("resource");
  const sum = (entries) => entries.reduce((s, r) => s + r.transferSize, 0);
  return {page: performance.getEntriesByType("navigation")[0].transferSize
                + sum(resources.filter((r) => r.initiatorType !== "fetch")),
          api: sum(resources.filter((r) => r.initiatorType === "fetch"))};
}"""
SINCE_SUBMIT = """(mark) => performance.getEntriesByName(mark).at(-1).startTime
                           - performance.getEntriesByName("submitted").at(-1).startTime"""
MARK_SUBMIT = """() => performance.mark("submitted")"""


def _paint(page: Any, url: str) -> dict[str, float]:
    page.goto(url)
    page.wait_for_function("() => performance.getEntriesByType('paint').length > 0")
    paints: dict[str, float] = page.evaluate(PAINTS)
    return paints


def _median(values: list[float]) -> float:
    return round(statistics.median(values), 1)


def measure(browser: Any, url: str, key: str) -> dict[str, Any]:
    first_paint, baseline_paint, drawn_hour, drawn_day = [], [], [], []
    weight: dict[str, int] = {}
    for _ in range(LOADS):
        context = browser.new_context(bypass_csp=True, viewport={"width": 1200, "height": 1500})
        page = context.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        baseline_paint.append(_paint(page, f"{url}/dashboard/LICENSE")["first-paint"])
        paints = _paint(page, f"{url}/")
        first_paint.append(paints["first-contentful-paint"])
        page.fill("#key", key)
        page.evaluate(MARK_SUBMIT)
        page.click("#signin button")
        page.wait_for_selector("body[data-charts=drawn]")
        drawn_hour.append(page.evaluate(SINCE_SUBMIT, "charts-drawn"))
        page.evaluate(MARK_SUBMIT)
        page.select_option("#window", "day")
        page.wait_for_function("() => performance.getEntriesByName('usage-drawn').length > 1")
        drawn_day.append(page.evaluate(SINCE_SUBMIT, "usage-drawn"))
        weight = page.evaluate(WEIGHT)
        context.close()
    return {
        "loads": LOADS,
        "first_contentful_paint_ms": _median(first_paint),
        "baseline_plain_page_first_paint_ms": _median(baseline_paint),
        "charts_drawn_after_key_48h_by_hour_ms": _median(drawn_hour),
        "charts_redrawn_30d_by_day_ms": _median(drawn_day),
        "page_transfer_bytes": weight["page"],
        "api_transfer_bytes_both_windows": weight["api"],
    }


def page_weight(url: str) -> int:
    """HTML and every script and style sheet it loads, as served (uncompressed)."""
    html = httpx.get(f"{url}/").text
    loaded = re.findall(r'<(?:script|link)[^>]* (?:src|href)="([^"]+)"', html)
    return len(html.encode()) + sum(len(httpx.get(f"{url}{path}").content) for path in loaded)


def main() -> dict[str, Any]:
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory(prefix="scr-bench-dashboard-") as folder:
        data = Path(folder) / "data"
        this_hour = utc_minute(datetime.now(UTC).replace(minute=0, second=0, microsecond=0))
        rows = month_of_usage(TENANT, MODELS, this_hour)
        write_usage(data, rows)
        key = create_key(data)
        port = free_port()
        server = start(["-m", "scr", "serve", "--data", str(data), "--port", str(port),
                        "--log-level", "warning"], Path(folder) / "serve.log")
        url = f"http://127.0.0.1:{port}"
        try:
            wait_until_ready(url)
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS,
                                                     timeout=TIMEOUT_MS)
                try:
                    figures = measure(browser, url, key)
                finally:
                    browser.close()
            figures["page_bytes_uncompressed"] = page_weight(url)
        finally:
            stop(server)
    return {"usage_rows": len(rows), "models": len(MODELS), "days": 30, **figures}


if __name__ == "__main__":
    import json

    print(json.dumps(main(), indent=2))
