"""The HTTP process: the API over the runtime, on the socket the supervisor listens on.

For now the edge also holds the runtime's one writer and its destinations; the readers move
into processes of their own next (see the README's "Operating" section).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
from pathlib import Path

import uvicorn

from scr.config import Config, default_config, load_config, with_bus
from scr.errors import ConfigError
from scr.serve.supervisor import READY_MESSAGE, ChildArgs

log = logging.getLogger("scr.serve.edge")

GC_THRESHOLDS = (50_000, 50, 1000)  # allocations before a young collection; older ratios
READY_POLL_S = 0.01  # how often the start-up watcher looks whether uvicorn is serving
EXIT_START_ERROR = 2  # as `scr serve` always answered a bad config or store


def load_settings(args: ChildArgs) -> Config:
    settings = load_config(args.config) if args.config else default_config()
    return with_bus(settings, args.bus) if args.bus else settings


def run_edge(args: ChildArgs) -> int:
    """Serve HTTP until SIGTERM; tell the supervisor once requests are answered."""
    import psycopg
    import psycopg_pool

    from scr.server import create_app
    from scr.store.postgres import redact

    try:
        settings = load_settings(args)
    except ConfigError as error:
        log.error("config error: %s", error.message)
        return EXIT_START_ERROR
    store_uri = args.store or settings.store
    try:
        application = create_app(settings, Path(args.data), store_uri, args.url)
    except (psycopg.Error, psycopg_pool.PoolTimeout) as error:
        log.error("cannot open the store %s: %s", redact(store_uri) if store_uri else args.data, error)
        return EXIT_START_ERROR
    # Long-lived startup objects leave the collector's view, and young collections run less
    # often: at 1,000 events/s this halved ingest p99 on the 2-core benchmark machine.
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
    server = uvicorn.Server(uvicorn.Config(
        application, fd=args.listen_fd, log_level=args.log_level, access_log=False,
        loop="uvloop", http="httptools", timeout_graceful_shutdown=int(args.drain_timeout_s),
    ))
    asyncio.run(_serve(server, args.ready_fd))
    return 0 if server.started else 1


async def _serve(server: uvicorn.Server, ready_fd: int) -> None:
    async def tell_when_ready() -> None:
        while not server.started and not server.should_exit:
            await asyncio.sleep(READY_POLL_S)
        if server.started:
            os.write(ready_fd, READY_MESSAGE)
        os.close(ready_fd)

    watcher = asyncio.ensure_future(tell_when_ready())
    await server.serve()
    await watcher
