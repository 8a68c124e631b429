"""The price table of a data folder: installed by ``scr prices update``, followed by the server.

``scr prices update FILE --data DIR`` validates FILE (``PriceTable.load``) and installs it as
``DIR/prices.json`` (written to a temporary file, fsynced, then renamed over the old one, so
a reader sees the old table or the new one, never half of one). A data folder without that
file uses the bundled table.

A running server follows the file: ``LivePrices.current()`` looks at the file's modification
time and size at most once per ``RELOAD_CHECK_S`` and re-reads it when they change, so an
update takes effect within about a second, without a restart. A file that became unusable
(edited by hand, say) is reported in the log and the table in use is kept.
"""

from __future__ import annotations

import functools
import logging
import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Protocol

from scr.errors import ConfigError
from scr.route.prices import PriceTable, default_prices

PRICES_FILE = "prices.json"
RELOAD_CHECK_S = 1.0

log = logging.getLogger("scr.route.prices")


class PriceSource(Protocol):
    """Anything that answers the price table in force now."""

    def current(self) -> PriceTable: ...


def install_prices(source: Path, data_dir: Path) -> PriceTable:
    """Validate ``source`` and make it the data folder's price table; raise ``ConfigError``."""
    table = PriceTable.load(source)
    raw = source.read_bytes()
    data_dir.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=data_dir, prefix=".prices-", suffix=".json")
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(raw)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, data_dir / PRICES_FILE)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return table


class LivePrices:
    """The price table of a data folder, re-read when ``prices.json`` changes."""

    def __init__(self, data_dir: Path, check_every_s: float = RELOAD_CHECK_S) -> None:
        self.path = data_dir / PRICES_FILE
        self._check_every_s = check_every_s
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._table = default_prices()
        self._next_check = 0.0
        self.current()

    def current(self) -> PriceTable:
        """The table in force: the data folder's file when there is one, else the bundled one."""
        now = time.monotonic()
        if now < self._next_check:
            return self._table
        with self._lock:
            self._next_check = now + self._check_every_s
            try:
                stat = self.path.stat()
            except FileNotFoundError:
                self._stamp, self._table = None, default_prices()
                return self._table
            stamp = (stat.st_mtime_ns, stat.st_size)
            if stamp != self._stamp:
                try:
                    self._table = PriceTable.load(self.path)
                    log.info("price table %s loaded from %s (%d models)",
                             self._table.version, self.path, len(self._table))
                except ConfigError as error:
                    log.error("price table %s not loaded, still using %s: %s",
                              self.path, self._table.version, error.message)
                self._stamp = stamp
            return self._table


@functools.cache
def live_prices(data_dir: Path) -> LivePrices:
    """The one ``LivePrices`` of a data folder in this process."""
    return LivePrices(data_dir.resolve())
