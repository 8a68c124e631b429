"""The real servers the test session starts: they live in ``scr.testing.servers`` (shared with
the benchmarks); this module keeps the tests' imports short."""

from scr.testing.servers import NatsServer, PostgresServer, nats_server_binary, with_database

__all__ = ["NatsServer", "PostgresServer", "nats_server_binary", "with_database"]
