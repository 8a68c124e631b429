"""The ledger tests' apps over data folders (``start_app``), for the archive's tests."""

from ledger.conftest import start_app  # noqa: F401  (a fixture)
