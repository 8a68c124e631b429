"""Opening sealed events on the way out: reads, deliveries, replays and exports.

An event whose subject was erased has no key left: the API shows it with its personal
fields ``null`` and ``"erased": true``, and destinations receive it as ledgered (the user id
is the subject's keyed hash, the other personal fields are gone).
"""

from __future__ import annotations

from typing import Any

import msgspec

from scr.privacy.sealing import (
    CONTENT_PREFIX,
    FINAL_MESSAGE,
    SOURCE_IP,
    TAG_PREFIX,
    USER_ID,
    Seal,
    erased,
    open_seal,
    restored,
)
from scr.privacy.subjects import Opener, Subjects
from scr.schema import Event
from scr.store.protocol import Store

ERASED_PREFIX = "erased:"  # how usage names an erased subject (DESIGN.md, "Privacy")
ERASED_NAME_CHARS = 12


_seal = msgspec.json.Decoder(Seal)


class EventOpener:
    """Opens sealed events with the subjects' keys (``scr.log.tail.Opening``)."""

    def __init__(self, subjects: Subjects) -> None:
        self.keys = Opener(subjects)

    def values(self, tenant: str, event_id: str, sealed: Seal) -> dict[str, str] | None:
        """The sealed fields in plaintext; None when the subject was erased."""
        key = self.keys.key(tenant, sealed.subject, sealed.g)
        return None if key is None else open_seal(sealed, event_id, key)

    def open(self, event: Event, seal: msgspec.Raw) -> Event:
        values = self.values(event.user.organization_id, event.event_id, _seal.decode(seal))
        return event if values is None else restored(event, values)

    def forget(self, tenant: str, subject: str) -> None:
        self.keys.forget(tenant, subject)

    def subject_of(self, tenant: str, user_id: str) -> str:
        return self.keys.subjects.subject_of(tenant, user_id)

    def user_of(self, store: Store, tenant: str, subject: str) -> str:
        """The user id a subject's keyed hash stands for, read from its newest sealed event;
        ``erased:<hash prefix>`` once its keys are destroyed."""
        seqs = store.subject_entries(tenant, subject)
        found = store.entries_by_seq(seqs[-1:]).get(seqs[-1]) if seqs else None
        if found is not None:
            entry = msgspec.json.decode(found.entry)
            values = self.values(tenant, entry["payload"]["event_id"], msgspec.convert(entry["seal"], Seal))
            if values is not None:
                return values[USER_ID]
        return ERASED_PREFIX + subject[:ERASED_NAME_CHARS]

    def open_json(self, tenant: str, entry: dict[str, Any]) -> dict[str, Any]:
        """A stored entry's event as the API shows it."""
        payload: dict[str, Any] = entry["payload"]
        seal = entry.get("seal")
        if seal is None:
            return payload
        values = self.values(tenant, payload["event_id"], msgspec.convert(seal, Seal))
        if values is None:
            return erased(payload)
        payload["user"]["user_id"] = values[USER_ID]
        if FINAL_MESSAGE in values:
            payload["outcome"]["final_message"] = values[FINAL_MESSAGE]
        metadata = payload.setdefault("metadata", {})
        if SOURCE_IP in values:
            metadata["source_ip"] = values[SOURCE_IP]
        for path, value in values.items():
            if path.startswith(TAG_PREFIX):
                metadata["custom_tags"][path.removeprefix(TAG_PREFIX)] = value
            elif path.startswith(CONTENT_PREFIX):
                _put_content(payload, path.removeprefix(CONTENT_PREFIX), value)
        return payload


def _put_content(payload: dict[str, Any], path: str, value: str) -> None:
    """A sealed content string back in its place (``user_request``, ``tool_outputs.2``)."""
    content = payload.setdefault("content", {})
    key, _, index = path.partition(".")
    if index:
        content[key][int(index)] = value
    else:
        content[key] = value
