"""OTLP test helpers: OTLP JSON documents as an exporter writes them, and ledger reads."""

from __future__ import annotations

import contextlib
import secrets
import sqlite3
from pathlib import Path
from typing import Any

import httpx
import psycopg

OTLP_PATH = "/v1/otlp/v1/traces"
NANOS = 1_000_000_000
T0_NS = 1_795_000_000 * NANOS  # 2026-11-18T…Z


def trace_id() -> str:
    return secrets.token_hex(16)


def span_id() -> str:
    return secrets.token_hex(8)


def attribute(key: str, value: Any) -> dict[str, Any]:
    """One OTLP JSON KeyValue (ints as strings, as OTLP JSON encodes int64)."""
    if isinstance(value, bool):
        return {"key": key, "value": {"boolValue": value}}
    if isinstance(value, int):
        return {"key": key, "value": {"intValue": str(value)}}
    if isinstance(value, float):
        return {"key": key, "value": {"doubleValue": value}}
    return {"key": key, "value": {"stringValue": value}}


def json_span(
    trace: str, span: str, parent: str = "", start_s: float = 0.0, end_s: float = 1.0,
    status_code: int = 0, name: str = "chat gpt-4o", **attributes: Any,
) -> dict[str, Any]:
    """An OTLP JSON span; attributes named with ``__`` for dots (``gen_ai__request__model``)."""
    return {
        "traceId": trace, "spanId": span, "parentSpanId": parent, "name": name, "kind": 3,
        "startTimeUnixNano": str(T0_NS + int(start_s * NANOS)),
        "endTimeUnixNano": str(T0_NS + int(end_s * NANOS)),
        "attributes": [attribute(k.replace("__", "."), v) for k, v in attributes.items()],
        "status": {"code": status_code},
    }


def chat_span(trace: str, parent: str = "", start_s: float = 0.0, end_s: float = 1.0,
              input_tokens: int = 100, output_tokens: int = 20, model: str = "gpt-4o",
              **attributes: Any) -> dict[str, Any]:
    return json_span(
        trace, span_id(), parent, start_s, end_s,
        gen_ai__operation__name="chat", gen_ai__provider__name="openai",
        gen_ai__request__model=model, gen_ai__response__model=model,
        gen_ai__usage__input_tokens=input_tokens, gen_ai__usage__output_tokens=output_tokens,
        **attributes,
    )


def export(*spans: dict[str, Any], service: str = "chat-service") -> dict[str, Any]:
    """An ``ExportTraceServiceRequest`` in OTLP JSON."""
    return {"resourceSpans": [{
        "resource": {"attributes": [attribute("service.name", service),
                                    attribute("service.version", "3.1.4")]},
        "scopeSpans": [{"scope": {"name": "test"}, "spans": list(spans)}],
    }]}


def session_events(client: Any, url: str, session_id: str, headers: dict[str, str]) -> list[Any]:
    """The events of a session, read back through the API (empty while there are none)."""
    getter = client.get if client is not None else httpx.get
    response = getter(f"{url}/v1/sessions/{session_id}", headers=headers)
    if response.status_code == 404:
        return []
    assert response.status_code == 200, response.text
    return [item["event"] for item in response.json()["events"]]


def stored_spans(data: Path, store_uri: str | None = None) -> list[tuple[str, str | None, bytes]]:
    """(span id, emitted_at, encoded span) of every pending-span row of a server's store:
    the data folder's SQLite, or the PostgreSQL database at ``store_uri``."""
    query = "SELECT span_id, emitted_at, span FROM otlp_spans ORDER BY span_id"
    if store_uri is None:
        with contextlib.closing(sqlite3.connect(data / "scr.db")) as conn:
            rows = conn.execute(query).fetchall()
    else:
        with psycopg.connect(store_uri) as pg:
            rows = pg.execute(query).fetchall()
    return [(str(span), emitted, bytes(body)) for span, emitted, body in rows]
