"""The HTTP process: the API over the runtime, on the socket the supervisor listens on.

For now the edge also holds the instance's one writer (the group committer); the destinations
run in reader processes (``scr.serve.reader``), which it wakes after each commit.
"""

from __future__ import annotations

import logging
import socket
from pathlib import Path

from scr.config import Config, default_config, load_config, with_bus
from scr.errors import ConfigError
from scr.http_server import bounded_server
from scr.serve.child import calm_the_collector, serve_and_tell
from scr.serve.readers import ReaderSet
from scr.serve.supervisor import ChildArgs

log = logging.getLogger("scr.serve.edge")

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
    # destinations run in reader processes, but in a cluster, where each runs on the owner
    # of its partition and moves with it
    readers = None
    if settings.bus is None and settings.routing.destinations:
        readers = ReaderSet(settings, Path(args.socket_dir))
    try:
        application = create_app(settings, Path(args.data), store_uri, args.url, readers)
    except (psycopg.Error, psycopg_pool.PoolTimeout) as error:
        log.error("cannot open the store %s: %s", redact(store_uri) if store_uri else args.data, error)
        return EXIT_START_ERROR
    calm_the_collector()
    server = bounded_server(application, settings.server, log_level=args.log_level)
    serve_and_tell(server, args.ready_fd, [socket.socket(fileno=args.listen_fd)])
    return 0 if server.started else 1
