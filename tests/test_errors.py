"""Outside the documented operations, a real ``scr serve`` still answers every error in the
standard body ``{"error": {"code", "message", "details": [{"path", "message"}]}}`` as JSON:
an unknown path, a known path with a method it does not serve, and paths Starlette would
otherwise redirect (a trailing slash, an id that is only an encoded slash)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from support import ServerProcess


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One real ``scr serve`` for the module (no key is needed to be told a path is wrong)."""
    started = ServerProcess(tmp_path_factory.mktemp("errors") / "data").start()
    yield started
    started.stop()


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> Iterator[httpx.Client]:
    """One keep-alive connection for every request: an error must not break it."""
    # Redirects are not followed: a 307 is itself the defect, not a way to another answer.
    with httpx.Client(base_url=server.url, follow_redirects=False, timeout=10) as opened:
        yield opened


def assert_standard_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """The answer is ``status`` with the standard JSON error body of ``code``; its error."""
    assert response.status_code == status, (response.status_code, response.headers, response.text)
    assert response.headers["content-type"].split(";")[0] == "application/json"
    body = response.json()
    assert set(body) == {"error"}
    error: dict[str, Any] = body["error"]
    assert set(error) == {"code", "message", "details"}
    assert error["code"] == code
    assert isinstance(error["message"], str) and error["message"]
    assert isinstance(error["details"], list)
    for detail in error["details"]:
        assert set(detail) == {"path", "message"}
    return error


@pytest.mark.parametrize("path", [
    "/v1/nope",  # no such endpoint at all
    "/v1/destinations/",  # a trailing slash: Starlette answered 307 to /v1/destinations
    "/v1/events/%2F",  # decoded /v1/events//: Starlette answered 307 to /v1/events
])
def test_a_path_no_endpoint_serves_is_404_in_the_standard_body(
    client: httpx.Client, path: str
) -> None:
    error = assert_standard_error(client.get(path), 404, "not_found")
    assert "no such endpoint" in error["message"]
    assert client.get("/healthz").status_code == 200  # same connection, service still up


def test_a_post_to_a_path_with_a_trailing_slash_is_404_not_a_redirect(
    client: httpx.Client,
) -> None:
    # A 307 would ask the client to send the events again elsewhere; the API answers plainly.
    assert_standard_error(client.post("/v1/events/", json={}), 404, "not_found")


def test_a_known_path_with_a_method_it_does_not_serve_is_405_with_allow(
    client: httpx.Client,
) -> None:
    response = client.delete("/v1/events")
    error = assert_standard_error(response, 405, "method_not_allowed")
    assert response.headers["allow"] == "POST"
    assert "POST" in error["message"]
    assert client.get("/healthz").status_code == 200
