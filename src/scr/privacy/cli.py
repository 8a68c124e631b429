"""``scr keys create-master`` and ``scr keys rotate-master``: the operator's master key."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Annotated

import typer

KeyFileArgument = Annotated[Path, typer.Argument(help="Where to write the new key (never overwritten).")]


def create_master(file: KeyFileArgument) -> None:
    """Write a new random master key (32 bytes in base64, mode 0600)."""
    from scr.privacy.master import write_master_key  # cryptography: imported when it runs

    try:
        write_master_key(file)
    except FileExistsError:
        typer.echo(f"error: {file} exists; a master key file is never overwritten", err=True)
        raise typer.Exit(2) from None
    except OSError as error:
        typer.echo(f"error: cannot write {file}: {error.strerror}", err=True)
        raise typer.Exit(2) from None
    print(f"wrote a new master key to {file}")
    print("keep it apart from the data in production (a secrets manager, another disk): whoever "
          "holds both can read every personal field")


def install_new_key(current: Path, new: Path) -> Path:
    """Put the new key at ``current``'s path (atomically); the old one is kept beside it as
    ``<name>.rotating`` until the rotation commits. Its path."""
    from scr.privacy.master import write_key_file

    backup = current.with_name(current.name + ".rotating")
    os.replace(current, backup)
    try:
        temporary = current.with_name(current.name + ".new")
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()
        write_key_file(temporary, new.read_bytes())
        os.replace(temporary, current)
    except BaseException:
        os.replace(backup, current)
        raise
    return backup


def rotate_master(
    new: Annotated[Path, typer.Option("--new", help="The new master key's file (scr keys create-master).")],
    data: Annotated[Path, typer.Option("--data", help="The data folder.")] = Path(".scr-data"),
    store: Annotated[
        str | None, typer.Option("--store", envvar="SCR_STORE", help="A PostgreSQL store.")
    ] = None,
    config: Annotated[Path | None, typer.Option("--config", help="The config naming the key file.")] = None,
) -> None:
    """Wrap every subject's data key by a new master key, with the servers running.

    The current key is the one the config or SCR_MASTER_KEY_FILE names. The new key first
    replaces it in that file, then every data key is rewrapped in one transaction (ledgered
    as MASTER_KEY_ROTATED in each tenant's audit trail); running processes take the new key
    from the file when the data names it. The old key is then not needed: destroy it.
    """
    from scr.cli import _key_writer, _load
    from scr.log.entry import Kind
    from scr.privacy.master import MasterKeyError, read_master_key
    from scr.privacy.setup import MASTER_KEY_ENV, master_key_file
    from scr.privacy.subjects import Subjects
    from scr.security.audit import append_admin_action
    from scr.store.protocol import Transaction

    current = master_key_file(_load(config))
    if current is None:
        typer.echo("error: no master key is configured "
                   f"(security.master_key_file or {MASTER_KEY_ENV})", err=True)
        raise typer.Exit(2)
    try:
        old_key, new_key = read_master_key(current), read_master_key(new)
    except MasterKeyError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2) from None
    with _key_writer(data, store) as committer:
        try:
            subjects = Subjects.open(committer.store, old_key, current)
        except MasterKeyError as error:
            typer.echo(f"error: {error}", err=True)
            raise typer.Exit(2) from None
        backup = install_new_key(current, new)
        try:
            def rotate(tx: Transaction) -> int:
                count = subjects.rotate(tx, new_key)
                for tenant in committer.store.tenants():
                    append_admin_action(committer, tx, tenant, Kind.MASTER_KEY_ROTATED,
                                        {"data_keys": count}, None)
                return count

            count = committer.run_sync(rotate)
        except BaseException:
            os.replace(backup, current)  # the data still names the old key
            raise
    backup.unlink()
    print(f"rewrapped {count} data keys; {current} now holds the new master key")
    print(f"the old key is no longer needed: destroy every copy of it (and {new}, now that "
          f"{current} holds it)")
