"""Builds scr's native core, the extension ``scr._core``, from ``native/`` (Rust, PyO3).

The extension is optional: without cargo (or with ``SCR_NO_NATIVE=1``) ``pip install``
still installs a working pure-Python scr, and ``scr.native`` says the core is off.
Everything else about the package is in pyproject.toml.
"""

import os

from setuptools import setup
from setuptools_rust import Binding, RustExtension

NO_NATIVE_ENV = "SCR_NO_NATIVE"

native_core = RustExtension(
    "scr._core",
    path="native/Cargo.toml",
    binding=Binding.PyO3,
    features=["python"],
    debug=False,  # the release profile (opt-level 3, thin LTO) even for `pip install -e`
    optional=True,  # no cargo: a warning, and the pure-Python reference runs
)

setup(rust_extensions=[] if os.environ.get(NO_NATIVE_ENV) == "1" else [native_core])
