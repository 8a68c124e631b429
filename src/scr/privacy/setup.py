"""Encryption at a process's start: the master key named by the environment or the config,
checked against the data before anything is served or written."""

from __future__ import annotations

import os
from pathlib import Path

from scr.config import Config
from scr.errors import ConfigError
from scr.privacy.master import MasterKeyError, read_master_key
from scr.privacy.subjects import CHECK_VALUE, Subjects
from scr.store.protocol import Store

MASTER_KEY_ENV = "SCR_MASTER_KEY_FILE"


def master_key_file(config: Config) -> Path | None:
    """The master key's file: ``SCR_MASTER_KEY_FILE``, else ``security.master_key_file``."""
    named = os.environ.get(MASTER_KEY_ENV) or config.security.master_key_file
    return Path(named) if named else None


def open_subjects(config: Config, store: Store) -> Subjects | None:
    """The store's subjects under the configured master key; None when encryption is off.

    Raises ``ConfigError`` (a start-up error) for a key file that is missing, unreadable or
    malformed, a key that is not the one the data was written with, and for data holding
    sealed fields when no key is configured.
    """
    path = master_key_file(config)
    if path is None:
        if store.privacy_value(CHECK_VALUE) is not None:
            raise ConfigError(
                "this data holds encrypted personal fields: configure its master key "
                f"(security.master_key_file or {MASTER_KEY_ENV})"
            )
        return None
    try:
        return Subjects.open(store, read_master_key(path), path)
    except MasterKeyError as error:
        raise ConfigError(str(error)) from None
