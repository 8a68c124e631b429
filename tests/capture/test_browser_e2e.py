"""End to end in headless Chromium: a page on another origin loads scr.js from a real
``scr serve``, runs a chat session, is closed, and the completion is in the ledger.

The browser is Debian's ``chromium`` driven by Playwright (``tests/browser.py``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from threading import Thread
from typing import Any

import httpx
import pytest

from browser import BROWSER_TIMEOUT_MS, chromium, require_browser
from support import ServerProcess, create_key, run_scr, wait_for

ARRIVAL_TIMEOUT_S = 15.0


class PageServer:
    """A real HTTP server on 127.0.0.1 serving one chat page that loads scr.js from scr."""

    def __init__(self, script_url: str) -> None:
        page = (
            "<!doctype html><html><head><title>chat</title>"
            f'<script src="{script_url}"></script></head><body><p>chat</p></body></html>'
        ).encode()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("content-type", "text/html; charset=utf-8")
                self.send_header("content-length", str(len(page)))
                self.end_headers()
                self.wfile.write(page)

            def log_message(self, format: str, *args: Any) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        Thread(target=self.server.serve_forever, daemon=True).start()
        self.origin = f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@dataclass
class Site:
    scr: ServerProcess
    page: PageServer
    key: str  # publishable, for the page's origin
    read: dict[str, str]
    browser: Any

    def session_events(self, session_id: str) -> list[dict[str, Any]]:
        response = httpx.get(f"{self.scr.url}/v1/sessions/{session_id}", headers=self.read)
        return [e["event"] for e in response.json()["events"]] if response.status_code == 200 else []

    def run_chat(self, script: str) -> None:
        """Open the page, run ``script`` in it (with ``key`` bound), then close the page."""
        page = self.browser.new_page()
        page.set_default_timeout(BROWSER_TIMEOUT_MS)
        page.goto(self.page.origin + "/")
        page.wait_for_function("() => window.scr && window.scr.version === '1'")
        page.evaluate(f"(key) => {{ {script} }}", self.key)
        page.close()


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    require_browser()
    data = tmp_path_factory.mktemp("browser") / "data"
    scr = ServerProcess(data).start()
    page_server = PageServer(f"{scr.url}/v1/sdk/scr.js")
    try:
        made = run_scr("keys", "create", "--data", str(data), "--tenant", "org_web",
                       "--role", "publishable", "--origin", page_server.origin)
        key = made.stdout.strip().splitlines()[-1]
        read = {"authorization": f"Bearer {create_key(data, 'org_web', 'read')}"}
        with chromium() as browser:
            yield Site(scr, page_server, key, read, browser)
    finally:
        page_server.close()
        scr.stop()


def _metric(site: Site, name: str) -> float:
    for line in httpx.get(f"{site.scr.url}/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"no metric {name}")


def test_closing_the_page_sends_the_session_once(site: Site) -> None:
    accepted_before = _metric(site, "scr_events_accepted_total")
    site.run_chat("""
        scr.start({key: key, sessionId: "chromium-close-1", model: "gpt-4o-mini",
                   userId: "u_browser", clientVersion: "page-1.0", tags: {feature: "support"}});
        scr.message("user", "Where is my order?");
        scr.usage({prompt_tokens: 120, completion_tokens: 30});
        scr.message("assistant", "It ships today.");
    """)
    (event,) = wait_for(lambda: site.session_events("chromium-close-1"), ARRIVAL_TIMEOUT_S,
                        "the beacon's event in the ledger")
    assert event["user"] == {"user_id": "u_browser", "organization_id": "org_web", "tier": "free"}
    assert event["outcome"]["status"] == "user_terminated"
    assert "final_message" not in event["outcome"]  # text is sent only when asked for
    usage = event["usage"]
    assert (usage["input_tokens"], usage["output_tokens"], usage["model"]) == (120, 30, "gpt-4o-mini")
    assert event["metadata"]["source_ip"] == "127.0.0.1"
    assert event["metadata"]["client_version"] == "page-1.0"
    assert event["metadata"]["custom_tags"] == {"feature": "support", "capture": "browser",
                                                "messages": "2"}
    # pagehide and visibilitychange both fire on close: the page sent once, not twice
    assert _metric(site, "scr_events_accepted_total") == accepted_before + 1
    assert _metric(site, "scr_events_duplicate_total") == 0


def test_an_ended_session_is_sent_at_once_and_not_again_on_close(site: Site) -> None:
    site.run_chat("""
        scr.start({key: key, sessionId: "chromium-end-1", model: "gpt-4o",
                   captureFinalMessage: true});
        scr.message("user", "Summarize this.");
        scr.usage({input_tokens: 900, output_tokens: 100, cache_read_tokens: 400});
        scr.message("assistant", "A summary.");
        scr.end("success");
    """)
    (event,) = wait_for(lambda: site.session_events("chromium-end-1"), ARRIVAL_TIMEOUT_S,
                        "the ended session's event")
    assert event["outcome"] == {"status": "success", "final_message": "A summary."}
    assert event["usage"]["cache_read_tokens"] == 400
    # 500 in at 2.50, 400 cached at 1.25, 100 out at 10.00 per 1M tokens
    assert event["usage"]["estimated_cost_usd"] == "0.0027500000"
    assert json.dumps(event).count("chromium-end-1") == 1
    assert _metric(site, "scr_events_duplicate_total") == 0
