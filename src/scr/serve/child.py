"""What every supervised process does first: its title, its logs, its metrics, its role."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import socket
import sys
from collections.abc import Awaitable, Callable
from typing import TypeVar

import uvicorn
from setproctitle import setproctitle

from scr.config import Config, default_config, load_config, with_bus, with_tls
from scr.errors import ConfigError
from scr.serve.supervisor import READY_MESSAGE, ChildArgs

log = logging.getLogger("scr.serve")
T = TypeVar("T")

ROLES = ("writer", "edge", "reader", "usage", "enrich", "archive")
EXIT_START_ERROR = 2  # as `scr serve` always answered a bad config or store
GC_THRESHOLDS = (50_000, 50, 1000)  # allocations before a young collection; older ratios
READY_POLL_S = 0.01  # how often the start-up watcher looks whether uvicorn is serving


def run_child(args: ChildArgs) -> int:
    """Run a forked child's role until it is told to stop; its exit code."""
    setproctitle(args.title)
    logging.basicConfig(
        level=args.log_level.upper(), force=True,
        format=f"%(asctime)s %(levelname)s {args.title}: %(name)s: %(message)s",
    )
    # prometheus_client chose how to keep values when the supervisor imported it; the
    # child keeps them in the run folder, where /metrics sums the whole set
    from prometheus_client import values

    values.ValueClass = values.get_value_class()  # type: ignore[no-untyped-call]
    if args.role == "writer":
        from scr.serve.writer import run_writer

        return run_writer(args)
    if args.role == "edge":
        from scr.serve.edge import run_edge

        return run_edge(args)
    if args.role == "reader":
        from scr.serve.reader import run_reader

        return run_reader(args)
    if args.role == "usage":
        from scr.serve.usage import run_usage

        return run_usage(args)
    if args.role == "enrich":
        from scr.serve.enrich import run_enrich

        return run_enrich(args)
    if args.role == "archive":
        from scr.serve.archive import run_archive

        return run_archive(args)
    print(f"unknown role {args.role!r}; one of {', '.join(ROLES)}", file=sys.stderr)
    return 2


def load_settings(args: ChildArgs) -> Config:
    """The config ``scr serve`` was given (the supervisor checked it before any child ran)."""
    settings = load_config(args.config) if args.config else default_config()
    settings = with_tls(settings, args.tls_cert, args.tls_key)
    return with_bus(settings, args.bus) if args.bus else settings


def prepared(args: ChildArgs, build: Callable[[Config, str | None], T]) -> tuple[Config, T] | None:
    """The config and what ``build`` makes of it and the store's address; None (logged) on a
    start-up error: a config that cannot be read, a store that cannot be opened, or a master
    key that does not fit it."""
    import psycopg
    import psycopg_pool

    from scr.store.postgres import redact

    try:
        settings = load_settings(args)
    except ConfigError as error:
        log.error("config error: %s", error.message)
        return None
    store_uri = args.store or settings.store
    try:
        return settings, build(settings, store_uri)
    except ConfigError as error:  # the master key, say (scr.privacy.setup)
        log.error("config error: %s", error.message)
        return None
    except (psycopg.Error, psycopg_pool.PoolTimeout) as error:
        log.error("cannot open the store %s: %s", redact(store_uri) if store_uri else args.data, error)
        return None


async def until_stopped(stop: asyncio.Event, work: Awaitable[None]) -> None:
    """Run ``work`` until ``stop`` is set (then cancel it); an exception of ``work`` ends the
    process's loop with it, so the supervisor starts the process again."""
    working = asyncio.ensure_future(work)
    stopping = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait([working, stopping], return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (working, stopping):
            task.cancel()
        await asyncio.wait([working, stopping])
    failure = None if working.cancelled() else working.exception()
    if failure is not None:
        raise failure


def calm_the_collector() -> None:
    """Long-lived start-up objects leave the collector's view, and collections run less often:
    a process holding tens of thousands of recent entries otherwise scans them all again and
    again (at 1,000 events/s this halved ingest p99 on the 2-core benchmark machine)."""
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def serve_and_tell(server: uvicorn.Server, ready_fd: int, sockets: list[socket.socket] | None = None,
                   before: Callable[[], Awaitable[None]] | None = None,
                   after: Callable[[], Awaitable[None]] | None = None) -> None:
    """Run ``server`` on its configured event loop (uvloop) until it is told to stop, with
    ``before`` and ``after`` around it; tell the supervisor once it answers requests."""
    with asyncio.Runner(loop_factory=server.config.get_loop_factory()) as runner:
        runner.run(_serve_and_tell(server, ready_fd, sockets, before, after))


async def _serve_and_tell(server: uvicorn.Server, ready_fd: int, sockets: list[socket.socket] | None,
                          before: Callable[[], Awaitable[None]] | None,
                          after: Callable[[], Awaitable[None]] | None) -> None:
    if before is not None:
        await before()
    async def tell_when_ready() -> None:
        while not server.started and not server.should_exit:
            await asyncio.sleep(READY_POLL_S)
        if server.started:
            os.write(ready_fd, READY_MESSAGE)
        os.close(ready_fd)

    watcher = asyncio.ensure_future(tell_when_ready())
    try:
        await server.serve(sockets)
        await watcher
    finally:
        if after is not None:
            await after()

