"""The OpenAPI 3.1 document of the HTTP API; the event schema comes from ``scr.schema``."""

from __future__ import annotations

from typing import Any

from scr import __version__
from scr.schema import json_schema

_ERROR = {"$ref": "#/components/schemas/Error"}
_BEARER: list[dict[str, list[str]]] = [{"apiKey": []}]


def _op(summary: str, responses: dict[str, str], secured: bool = True) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "summary": summary,
        "responses": {
            code: {
                "description": text,
                "content": {"application/json": {"schema": _ERROR}} if code[0] in "45" else {},
            }
            for code, text in responses.items()
        },
    }
    if secured:
        operation["security"] = _BEARER
    return operation


def _browser_paths() -> dict[str, Any]:
    refused = {
        "401": "no or unknown publishable key",
        "403": "not a publishable key, or an origin it does not allow",
    }
    post = _op(
        "A browser beacon: one chat session, as JSON in a text/plain body (?key=publishable key)",
        {
            "202": "accepted or duplicate", "400": "malformed or invalid session", **refused,
            "409": "same segment, different body", "413": "body over 64 KiB",
            "415": "not text/plain or application/json", "429": "over the key's rate limit (Retry-After)",
        },
        secured=False,
    )
    post["security"] = [{"publishableKey": []}]
    preflight = _op("CORS preflight for the key's origins", {"204": "allowed", **refused}, secured=False)
    preflight["security"] = [{"publishableKey": []}]
    return {"post": post, "options": preflight}


def _otlp_post() -> dict[str, Any]:
    post = _op(
        "OTLP/HTTP traces: GenAI spans stored durably and aggregated into session completions",
        {
            "200": "ExportTraceServiceResponse (partial_success counts rejected spans)",
            "400": "malformed protobuf, JSON or gzip", "401": "no or bad key",
            "403": "the key may not ingest", "413": "body or decompressed body over the limit",
            "415": "not application/x-protobuf or application/json, or an unknown encoding",
        },
    )
    post["requestBody"] = {"required": True, "content": {
        "application/x-protobuf": {"schema": {"type": "string", "format": "binary"}},
        "application/json": {"schema": {"type": "object"}},
    }}
    return post


def document() -> dict[str, Any]:
    """The OpenAPI document served at ``/openapi.json``."""
    event = json_schema()
    defs = event.pop("$defs")
    post_events = _op(
        "Capture one event, an array of events, or CloudEvents (structured mode)",
        {
            "202": "every event accepted or duplicate", "207": "a batch with rejected events",
            "400": "malformed body (not UTF-8, nested over 128 levels, broken gzip) or invalid event "
                   "(also: a key repeated in one object)",
            "401": "no or bad key",
            "403": "another tenant's event", "409": "same id, different body",
            "413": "body (as sent or inflated) over 16 MiB, batch over 10,000 events or event over 256 KiB",
            "415": "another content type, a charset other than utf-8, or a content encoding other than gzip",
        },
    )
    post_events["parameters"] = [{
        "name": "content-encoding", "in": "header", "required": False,
        "schema": {"type": "string", "enum": ["identity", "gzip", "x-gzip"]},
    }]
    post_events["requestBody"] = {
        "required": True,
        "content": {
            "application/json": {
                "schema": {"oneOf": [
                    {"$ref": "#/components/schemas/Event"},
                    {"type": "array", "items": {"$ref": "#/components/schemas/Event"}},
                ]}
            },
            "application/cloudevents+json": {"schema": {"type": "object"}},
            "application/cloudevents-batch+json": {"schema": {"type": "array"}},
        },
    }
    read = {"200": "found", "401": "no or bad key", "404": "not found"}
    return {
        "openapi": "3.1.0",
        "info": {"title": "scr: Session Completion Runtime", "version": __version__},
        "components": {
            "securitySchemes": {
                "apiKey": {"type": "http", "scheme": "bearer"},
                # sendBeacon cannot set headers: a publishable key rides in the query string
                "publishableKey": {"type": "apiKey", "in": "query", "name": "key"},
            },
            "schemas": {
                **defs,
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {"error": {
                        "type": "object",
                        "required": ["code", "message", "details"],
                        "properties": {
                            "code": {"type": "string"}, "message": {"type": "string"},
                            "details": {"type": "array", "items": {
                                "type": "object",
                                "properties": {"path": {"type": "string"},
                                               "message": {"type": "string"}},
                            }},
                        },
                    }},
                },
            },
        },
        "paths": {
            "/v1/events": {"post": post_events},
            "/v1/events/{event_id}": {"get": _op("One event of the key's tenant", read)},
            "/v1/sessions/{session_id}": {"get": _op("A session's events", read)},
            "/v1/destinations": {"get": _op("Destinations: state, lag, last error", read)},
            "/v1/destinations/{name}/enable": {
                "post": _op("Re-enable a destination disabled by a 410", read)
            },
            "/v1/deliveries": {
                "get": _op("Deliveries by destination and status", {**read, "400": "bad query"})
            },
            "/v1/deliveries/replay": {
                "post": _op("Requeue deliveries, keeping event and webhook ids",
                            {**read, "400": "bad request"})
            },
            "/v1/ledger/checkpoint": {
                "get": _op("Newest signed checkpoint (C2SP note, text/plain)", read),
                "post": _op("Issue a checkpoint now", {
                    **read, "503": "the ledger no longer extends its newest checkpoint"}),
            },
            "/v1/ledger/public-key": {"get": _op("C2SP verifier key (text/plain)", read)},
            "/v1/ledger/checkpoints": {"get": _op("Checkpoints since a tree size",
                                                  {**read, "400": "bad query"})},
            "/v1/ledger/entries": {"get": _op("Ledger entries [start, end) with leaf bytes",
                                              {**read, "400": "bad query"})},
            "/v1/ledger/proof/inclusion": {"get": _op("RFC 6962 inclusion proof",
                                                      {**read, "400": "bad query"})},
            "/v1/ledger/proof/consistency": {"get": _op("RFC 6962 consistency proof",
                                                        {**read, "400": "bad query"})},
            "/v1/decide": {"post": _op("Choose an agent's next action (Bickford Canon)",
                                       {**read, "400": "invalid request"})},
            "/v1/canon/items": {
                "get": _op("Canon items", read),
                "post": _op("Add or change a canon item", {**read, "400": "invalid item"}),
            },
            "/v1/canon/promote": {"post": _op("Promote a canon item one level",
                                              {**read, "400": "invalid request"})},
            "/v1/canon/why-not/{trace_id}": {"get": _op("One denial trace", read)},
            "/v1/canon/observations": {"post": _op("Evidence about an action or item",
                                                   {**read, "400": "invalid observation"})},
            "/v1/sdk/scr.js": {"get": _op("The browser beacon script (JavaScript)", {"200": "ok"}, False)},
            "/v1/browser/events": _browser_paths(),
            "/v1/cluster": {"get": _op("Instances, the partitions each owns, bus lag per partition",
                                       {**read, "403": "needs an admin or platform key"})},
            "/v1/conflicts": {"get": _op("Events whose id came back with another body after its 202",
                                         {**read, "400": "bad query"})},
            "/v1/otlp/v1/traces": {"post": _otlp_post()},
            "/v1/schema": {"get": _op("JSON Schema of the event", {"200": "ok"}, False)},
            "/healthz": {"get": _op("Liveness", {"200": "alive"}, False)},
            "/readyz": {"get": _op("Readiness", {"200": "ready", "503": "cannot commit or reach the bus"},
                                  False)},
            "/metrics": {"get": _op("Prometheus metrics", {"200": "metrics"}, False)},
        },
    }
