"""What both stores do the same way around their SQL: delivery filters and tenant paging."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from scr.store.records import StoredEntry

READ_PAGE_ENTRIES = 1000


def delivery_filter(
    tenant: str | None, destination: str | None, status: str | None, mark: str
) -> tuple[str, list[str]]:
    """The ``WHERE`` clause (empty when unfiltered) and its parameters, with ``mark`` as the
    backend's placeholder (``?`` or ``%s``)."""
    clauses, params = [], []
    for column, value in (("tenant", tenant), ("destination", destination), ("status", status)):
        if value is not None:
            clauses.append(f"{column} = {mark}")
            params.append(value)
    return (f"WHERE {' AND '.join(clauses)}" if clauses else ""), params


def tenant_pages(
    read: Callable[[int, int], list[StoredEntry]], start: int, after_seq: int
) -> Iterator[StoredEntry]:
    """A tenant's entries from position ``start`` with seq > ``after_seq``, read lazily
    ``READ_PAGE_ENTRIES`` at a time by ``read(start, end)`` (``tenant_entries``)."""
    while True:
        page = read(start, start + READ_PAGE_ENTRIES)
        yield from (entry for entry in page if entry.seq > after_seq)
        if len(page) < READ_PAGE_ENTRIES:
            return
        start += READ_PAGE_ENTRIES
