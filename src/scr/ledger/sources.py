"""Where ``scr ledger export`` and ``audit`` read a ledger: a data folder, or a server's API."""

from __future__ import annotations

import base64
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import httpx
import msgspec

from scr.ledger.checkpoints import CHECKPOINTS_FILE, CheckpointLog
from scr.ledger.tiles import TileCache, tile_view
from scr.ledger.verify import connect_read_only
from scr.log.nodes import MerkleTree
from scr.retention.tiers import ArchiveTier
from scr.store import ledger_rows
from scr.store.sqlite import DATABASE_FILE, read_segments

PAGE_ENTRIES = 1000  # the API's most entries per call
HTTP_TIMEOUT_S = 30.0
OFFLINE_TILE_CACHE = 256


class SourceError(RuntimeError):
    """The ledger could not be read (no such folder, server unreachable, refused request)."""


@dataclass(frozen=True, slots=True)
class Leaf:
    """One entry as a leaf of its tenant's tree: index, event id and the exact stored bytes."""

    index: int
    event_id: str | None
    stored: bytes

    @property
    def ts(self) -> str:
        """The entry's append time (RFC 3339, UTC)."""
        value: str = msgspec.json.decode(self.stored)["ts"]
        return value


class LedgerSource(Protocol):
    """What export and audit need from a ledger."""

    def verifier_key(self) -> str:
        """The public verifier key checkpoints are signed with."""
        ...

    def checkpoint(self, tenant: str) -> str:
        """The tenant's newest signed checkpoint note."""
        ...

    def leaves(self, tenant: str, start: int, end: int) -> list[Leaf]:
        """Leaves ``[start, end)`` (at most ``PAGE_ENTRIES``)."""
        ...

    def inclusion_proof(self, tenant: str, leaf: Leaf, tree_size: int) -> list[bytes]:
        """The inclusion proof of a leaf in the tree of ``tree_size`` leaves."""
        ...


def all_leaves(source: LedgerSource, tenant: str, start: int, end: int) -> Iterator[Leaf]:
    """Leaves ``[start, end)``, page by page."""
    while start < end:
        page = source.leaves(tenant, start, min(end, start + PAGE_ENTRIES))
        if not page:
            raise SourceError(f"the ledger has no entry {start} for tenant {tenant!r}")
        yield from page
        start = page[-1].index + 1


class DataSource:
    """A data folder, read-only (offline: no server needed)."""

    def __init__(self, data_dir: Path) -> None:
        database = data_dir / DATABASE_FILE
        checkpoints = data_dir / CHECKPOINTS_FILE
        for path in (database, checkpoints):
            if not path.is_file():
                raise SourceError(f"no {path.name} in {data_dir}")
        try:
            self._conn = connect_read_only(database)
            self._log = CheckpointLog(checkpoints, read_only=True)
        except sqlite3.DatabaseError as error:
            raise SourceError(f"cannot read {data_dir}: {error}") from None
        self._cache = TileCache(OFFLINE_TILE_CACHE)
        self._trees: dict[str, MerkleTree] = {}
        self._archive = ArchiveTier(lambda tenant: read_segments(self._conn, tenant))

    def verifier_key(self) -> str:
        """The newest verifier key the data folder recorded."""
        keys = self._log.verifier_keys()
        if not keys:
            raise SourceError("the data folder records no checkpoint signing key")
        return keys[-1]

    def checkpoint(self, tenant: str) -> str:
        """The tenant's newest checkpoint."""
        newest = self._log.newest(tenant)
        if newest is None:
            raise SourceError(f"tenant {tenant!r} has no checkpoint yet")
        return newest.note

    def leaves(self, tenant: str, start: int, end: int) -> list[Leaf]:
        """Leaves ``[start, end)`` from the ledger table (an archived one from its segment)."""
        leaves = []
        for row in ledger_rows.tenant_entries(self._conn, tenant, start, end, PAGE_ENTRIES):
            stored = row.stored or self._archive.entry(tenant, row.tenant_seq)
            if stored is not None:  # None: purged with its segment
                leaves.append(Leaf(row.tenant_seq, row.event_id, stored))
        return leaves

    def inclusion_proof(self, tenant: str, leaf: Leaf, tree_size: int) -> list[bytes]:
        """The proof from the stored tiles (what the server would answer)."""
        tree = self._trees.get(tenant)
        if tree is None or tree.size < tree_size:
            tree = self._trees[tenant] = MerkleTree(tile_view(self._conn, tenant, self._cache))
        return tree.inclusion_proof(leaf.index, tree_size)


class HttpSource:
    """A server's ``/v1/ledger`` API, with an API key of role read, admin or auditor."""

    def __init__(self, client: httpx.Client, tenant: str | None = None) -> None:
        self._client = client
        self._tenant = tenant  # sent as ?tenant= (used by keys that span tenants)

    def _get(self, path: str, **params: Any) -> httpx.Response:
        if self._tenant is not None:
            params["tenant"] = self._tenant
        try:
            response = self._client.get(path, params=params, timeout=HTTP_TIMEOUT_S)
        except httpx.HTTPError as error:
            raise SourceError(f"cannot reach the server: {error}") from None
        if response.status_code != 200:
            raise SourceError(f"GET {path} answered {response.status_code}: {response.text[:300]}")
        return response

    def verifier_key(self) -> str:
        """``GET /v1/ledger/public-key``."""
        return self._get("/v1/ledger/public-key").text.strip()

    def checkpoint(self, tenant: str) -> str:
        """``GET /v1/ledger/checkpoint``."""
        return self._get("/v1/ledger/checkpoint").text

    def leaves(self, tenant: str, start: int, end: int) -> list[Leaf]:
        """``GET /v1/ledger/entries``."""
        listed = self._get("/v1/ledger/entries", start=start, end=end).json()["entries"]
        return [Leaf(e["index"], e["event_id"], base64.b64decode(e["leaf"])) for e in listed]

    def inclusion_proof(self, tenant: str, leaf: Leaf, tree_size: int) -> list[bytes]:
        """``GET /v1/ledger/proof/inclusion``, by event id when the entry has one."""
        named = {"event_id": leaf.event_id} if leaf.event_id is not None else {"index": leaf.index}
        answer = self._get("/v1/ledger/proof/inclusion", tree_size=tree_size, **named).json()
        if answer["leaf_index"] != leaf.index or answer["tree_size"] != tree_size:
            raise SourceError(
                f"asked for the proof of entry {leaf.index} at size {tree_size}, the server answered "
                f"entry {answer['leaf_index']} at size {answer['tree_size']}"
            )
        return [base64.b64decode(h) for h in answer["hashes"]]

    def consistency_proof(self, first: int, second: int) -> list[bytes]:
        """``GET /v1/ledger/proof/consistency``."""
        answer = self._get("/v1/ledger/proof/consistency", first=first, second=second).json()
        return [base64.b64decode(h) for h in answer["hashes"]]
