"""The native core under test: built by `make` wherever cargo is (a missing build is a failure
there); on a machine without cargo there is nothing native to compare, and pytest says so."""

from __future__ import annotations

import shutil
from types import ModuleType

import pytest


@pytest.fixture(scope="session")
def core() -> ModuleType:
    try:
        from scr import _core
    except ImportError as error:
        if shutil.which("cargo") is not None:
            pytest.fail(f"cargo is here but scr._core is not built ({error}): run `make .venv/.installed`")
        pytest.skip("no cargo on this machine: scr._core cannot be built, only the Python reference runs")
    return _core
