"""The isolation matrix: every operation of ``/openapi.json``, called with every role of one
tenant (path parameters and bodies naming the other tenant's real ids), never answers with the
other tenant's data. Two tenants with events, sessions, users, deliveries, decisions, canon
items, checkpoints and admin entries; run on each store."""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from conftest import config_text, parse_config
from scr.enrich.enricher import Enricher
from scr.enrich.minilm import MiniLM
from scr.enrich.texts import DEFAULT_FIELDS
from scr.enrich.writes import LocalWrites
from scr.log.commit import Committer
from scr.privacy.master import write_master_key
from scr.privacy.opening import EventOpener
from scr.privacy.setup import open_subjects
from scr.security.auth import create_key
from scr.security.keys import Role
from scr.store import open_store
from support import create_key as make_key
from support import make_event, wait_for

pytestmark = pytest.mark.every_store

ROLES = ("ingest", "read", "admin", "auditor", "platform", "publishable")
METHODS = {"get", "put", "post", "delete", "options", "head", "patch"}
ORIGIN = "https://app.example"
DESTINATION = "archive"
# Operations that find one thing by an id: given the other tenant's, never served.
OTHER_TENANTS_LOOKUPS = {
    ("/v1/events/{event_id}", "get"), ("/v1/sessions/{session_id}", "get"),
    ("/v1/canon/why-not/{trace_id}", "get"), ("/v1/canon/promote", "post"),
    ("/v1/ledger/proof/inclusion", "get"),
    ("/v1/subjects/{user_id}", "delete"), ("/v1/subjects/{user_id}/export", "get"),
    ("/v1/sessions/{session_id}/similar", "get"),
    ("/v1/legal-holds", "post"), ("/v1/legal-holds/{hold_id}", "delete"),
}
RECONCILE_EXPORT = Path(__file__).parent / "usage" / "exports" / "openai-costs.json"
CONFIG = config_text(f"      - {{name: {DESTINATION}, type: file, path: archive.jsonl, transform: audit_v1}}"
                     ) + "  enrichment: {embedder: {kind: local}}\n"


@dataclass
class Tenant:
    """One tenant's keys and the identifiers of its data (each found nowhere else)."""

    name: str
    keys: dict[str, str] = field(default_factory=dict)
    event_ids: list[str] = field(default_factory=list)
    trace_ids: list[str] = field(default_factory=list)
    hold_id: str = ""

    @property
    def word(self) -> str:
        return self.name.removeprefix("org_")

    @property
    def session_id(self) -> str:
        return f"sess_{self.word}_only"

    @property
    def user_id(self) -> str:
        return f"user_{self.word}_only"

    @property
    def item_id(self) -> str:
        return f"def.{self.word}_only"

    def event(self, n: int) -> dict[str, Any]:
        return make_event(
            f"evt_{self.word}_only_{n}",
            **{"session.session_id": self.session_id, "user.user_id": self.user_id,
               "user.organization_id": self.name,
               "outcome.final_message": f"a message only {self.word} wrote",
               "metadata.custom_tags": {"project": f"project_{self.word}_only"}},
        )

    def identifiers(self) -> set[str]:
        """What no answer to another tenant may contain. Random key ids and global trace ids
        are matched as whole JSON strings (or actors), never as bare substrings of a hash."""
        named = {self.name, self.session_id, self.user_id, self.item_id, *self.event_ids,
                 f"a message only {self.word} wrote", f"project_{self.word}_only"}
        named |= {f'"{trace}"' for trace in self.trace_ids} | {self.hold_id, f"a case only {self.word} has"}
        for key in self.keys.values():
            key_id = key.split("_", 2)[1]
            named |= {f'"{key_id}"', f"key:{key_id}"}
        return named

    def bearer(self, role: str) -> dict[str, str]:
        return {"authorization": f"Bearer {self.keys[role]}"}


def _publishable_key(client: Any, tenant: str) -> str:
    store = open_store(client.data, client.store_uri)
    committer = Committer(store, buffer_size=1)
    committer.start()
    try:
        return create_key(committer, tenant, Role.PUBLISHABLE, origins=[ORIGIN]).key
    finally:
        committer.close()
        store.close()


def _seed(client: Any, name: str) -> Tenant:
    """A tenant with keys of every role and some of everything an API can read back."""
    tenant = Tenant(name)
    for role in ROLES[:-1]:
        tenant.keys[role] = make_key(client.data, name, role, client.store_uri)
    tenant.keys["publishable"] = _publishable_key(client, name)
    admin = tenant.bearer("admin")
    events = [tenant.event(n) for n in range(2)]
    tenant.event_ids = [e["event_id"] for e in events]
    assert client.post("/v1/events", json=events, headers=admin).status_code == 202
    decided = client.post("/v1/decide", headers=admin, json={
        "goal": f"ship for {tenant.user_id}", "canon_refs": [],
        "candidates": [{"actions": [{"id": "deploy", "risk_level": "HIGH"}]},
                       {"actions": [{"id": "wait", "risk_level": "LOW"}]}],
    })
    assert decided.status_code == 200, decided.text
    tenant.trace_ids = [t["trace_id"] for t in decided.json()["traces"]]
    assert tenant.trace_ids, "the HIGH risk candidate leaves a denial trace"
    item = client.post("/v1/canon/items", headers=admin, json={
        "id": tenant.item_id, "kind": "DEFINITION", "title": f"an item of {tenant.word}",
        "ts": "2026-11-25T10:00:00Z",
        "provenance": {"source": "test", "ref": tenant.word, "author": tenant.user_id},
    })
    assert item.status_code == 201, item.text
    assert client.post("/v1/canon/observations", headers=admin,
                       json={"action": "deploy", "outcome": "success"}).status_code == 201
    client.post("/v1/ledger/checkpoint", headers=admin)  # 503 on PostgreSQL (no trees there)
    replay = {"destination": DESTINATION, "event_ids": tenant.event_ids}
    assert client.post("/v1/deliveries/replay", json=replay, headers=admin).status_code == 200
    hold = client.post("/v1/legal-holds", headers=admin, json={
        "tenant": name, "user_id": tenant.user_id, "reason": f"a case only {tenant.word} has"})
    assert hold.status_code == 201, hold.text
    tenant.hold_id = hold.json()["id"]
    return tenant


def _embed_everything(client: Any, config: str) -> None:
    """Both tenants' session texts embedded (opened with the master key), as the enricher of
    ``scr serve`` would."""
    store = open_store(client.data, client.store_uri)
    try:
        subjects = open_subjects(parse_config(config), store)
        assert subjects is not None
        enricher = Enricher(store, MiniLM(), DEFAULT_FIELDS, LocalWrites(store), EventOpener(subjects))
        asyncio.run(enricher.catch_up(store.last_seq()))  # from cursor 0: every entry
        assert store.vectors.counts("org_alpha")[1] == store.vectors.counts("org_beta")[1] == 1
    finally:
        store.close()


def _body(path: str, method: str, other: Tenant) -> Any:
    """A request body that reaches for ``other``'s data where the operation looks something up
    (what it creates is named afresh: the caller may store any string in its own tenant)."""
    if method != "post":
        return None
    bodies: dict[str, Any] = {
        "/v1/events": other.event(0),
        "/v1/otlp/v1/traces": {"resourceSpans": []},
        "/v1/browser/events": {"session_id": "sess_probe", "start_time": "2026-11-25T09:58:00Z",
                               "end_time": "2026-11-25T10:00:00Z", "model": "gpt-4o"},
        "/v1/deliveries/replay": {"destination": DESTINATION, "event_ids": other.event_ids},
        "/v1/decide": {"goal": "ship", "canon_refs": [other.item_id],
                       "candidates": [{"actions": [{"id": "wait", "risk_level": "LOW"}]}]},
        "/v1/canon/items": {"id": "def.probe", "kind": "DEFINITION", "title": "a probe",
                            "ts": "2026-11-25T10:00:00Z",
                            "provenance": {"source": "test", "ref": "probe", "author": "probe"}},
        "/v1/canon/promote": {"item_id": other.item_id},
        "/v1/canon/observations": {"action": "deploy", "outcome": "success"},
        "/v1/usage/reconcile": json.loads(RECONCILE_EXPORT.read_text()),
        "/v1/search": {"text": f"a message only {other.word} wrote", "k": 100},
        "/v1/legal-holds": {"tenant": other.name, "user_id": other.user_id, "reason": "a probe"},
    }
    return bodies.get(path, {})


def _path(template: str, other: Tenant) -> str:
    template = template.replace("/dashboard/{name}", "/dashboard/dashboard.js")  # a file of the page
    return (template.replace("{event_id}", other.event_ids[0])
            .replace("{session_id}", other.session_id)
            .replace("{trace_id}", other.trace_ids[0])
            .replace("{hold_id}", other.hold_id)
            .replace("{user_id}", other.user_id)
            .replace("{name}", DESTINATION))


def _query(path: str, role: str, caller: Tenant, other: Tenant) -> dict[str, Any]:
    """``?tenant=`` naming the other tenant everywhere, and the operation's own parameters."""
    query: dict[str, Any] = {"tenant": other.name}
    extra: dict[str, dict[str, Any]] = {
        "/v1/ledger/entries": {"start": 0, "end": 100},
        "/v1/ledger/proof/inclusion": {"event_id": other.event_ids[0], "tree_size": 100},
        "/v1/ledger/proof/consistency": {"first": 1, "second": 2},
        "/v1/ledger/checkpoints": {"since": 0},
        "/v1/deliveries": {"destination": DESTINATION},
        "/v1/conflicts": {"after": 0},
        "/v1/dashboard/live": {"events": 1},
        "/v1/usage/reconcile": {"format": "openai-costs"},
        "/v1/anomalies": {"from": "2026-11-01T00:00:00Z", "to": "2026-12-01T00:00:00Z"},
        "/v1/usage": {"from": "2026-11-01T00:00:00Z", "to": "2026-12-01T00:00:00Z",
                      "group_by": "user_id,model"},
        "/v1/usage/users": {"from": "2026-11-01T00:00:00Z", "to": "2026-12-01T00:00:00Z",
                            "limit": 1000},
    }
    query.update(extra.get(path, {}))
    if path == "/v1/browser/events":
        query["key"] = caller.keys[role]
    return query


def _readable(text: str) -> str:
    """The answer, with every base64 ``leaf`` decoded beside it (a leaf is the entry's bytes)."""
    try:
        answer = json.loads(text)
    except ValueError:
        return text
    found = [text]

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            for name, inner in value.items():
                if name == "leaf" and isinstance(inner, str):
                    with contextlib.suppress(binascii.Error, ValueError):
                        found.append(base64.b64decode(inner, validate=True).decode("utf-8", "replace"))
                walk(inner)
        elif isinstance(value, list):
            for inner in value:
                walk(inner)

    walk(answer)
    return "\n".join(found)


def test_no_answer_reveals_the_other_tenants_data(serve: Any, tmp_path: Path) -> None:
    key_file = tmp_path / "master.key"  # encryption on: the subjects' routes answer
    write_master_key(key_file)
    security = f"session_completion_runtime:\n  security: {{master_key_file: {key_file}}}\n"
    config = CONFIG.replace("session_completion_runtime:\n", security)
    client = serve(config)
    alpha, beta = _seed(client, "org_alpha"), _seed(client, "org_beta")
    _embed_everything(client, config)
    wait_for(lambda: (client.data / "archive.jsonl").exists(), what="the archive destination")
    operations = [
        (path, method) for path, item in client.get("/openapi.json").json()["paths"].items()
        for method in item if method in METHODS
    ]
    assert len(operations) >= 30
    leaks: list[str] = []
    reached: list[str] = []
    answered: set[tuple[str, str]] = set()  # operations some role of the caller was served
    not_here: set[tuple[str, str]] = set()  # what this store does not serve (503)
    for caller, other in ((alpha, beta), (beta, alpha)):
        forbidden = other.identifiers()
        for path, method in operations:
            url = _path(path, other)
            for role in ROLES:
                body = _body(path, method, other)
                query = _query(path, role, caller, other)
                headers = {**caller.bearer(role), "origin": ORIGIN}
                if body is None:
                    answer = client.request(method.upper(), url, params=query, headers=headers)
                else:
                    answer = client.request(method.upper(), url, params=query, headers=headers, json=body)
                assert answer.status_code < 500 or answer.status_code == 503, (path, role, answer.text)
                # an id the request itself carried may be echoed ("no event 'evt_…'"), never more;
                # ?tenant= is never echoed (a tenant's key ignores it)
                asked = url + json.dumps({**query, "tenant": None}) + json.dumps(body)
                shown = [name for name in forbidden if name in _readable(answer.text)
                         and name.strip('"') not in asked]
                if shown:
                    leaks.append(f"{caller.name} {role}: {method.upper()} {path} showed {shown}")
                if url != path and answer.status_code < 300:  # a path naming the other's id
                    reached.append(f"{caller.name} {role}: {method.upper()} {url} -> {answer.status_code}")
                if answer.status_code < 300:
                    answered.add((path, method))
                elif answer.status_code == 503:
                    not_here.add((path, method))
                if path == "/v1/deliveries/replay" and answer.status_code == 200:
                    assert answer.json()["requeued"] == 0, (caller.name, role)
    assert not leaks, "\n".join(leaks)
    # every operation served someone, but those looking up the other tenant's ids (and what
    # the store does not serve: on PostgreSQL, ledger proofs and OpenTelemetry ingest)
    assert set(operations) - answered - not_here == OTHER_TENANTS_LOOKUPS - not_here
    # the destination's name is the operator's, not a tenant's: enabling it is allowed; the
    # dashboard's files are the same for everyone
    assert all("/enable" in line or "/dashboard/" in line for line in reached), "\n".join(reached)
