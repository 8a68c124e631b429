"""scr.native binds the core when it is built, the Python references under SCR_NATIVE=0."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from types import ModuleType

BOUND = ("leaf_hashes", "chain_hashes", "extend_frontier", "webhook_ids", "batch_webhook_id", "sign",
         "check_events", "event_keys", "KeyIndex", "Prices", "transform_events")
SHOW = (
    "import json, scr.native as n; "
    f"print(json.dumps({{'native': n.NATIVE, 'status': n.STATUS, 'why': n.WHY_OFF, "
    f"'modules': [getattr(n, name).__module__ for name in {BOUND!r}]}}))"
)


def bound(native_env: str | None) -> dict[str, object]:
    env = {k: v for k, v in os.environ.items() if k != "SCR_NATIVE"}
    if native_env is not None:
        env["SCR_NATIVE"] = native_env
    result = subprocess.run([sys.executable, "-c", SHOW], env=env, capture_output=True, text=True,
                            timeout=60, check=True)
    shown: dict[str, object] = json.loads(result.stdout)
    return shown


def test_the_core_is_live_when_built(core: ModuleType) -> None:
    shown = bound(None)
    assert shown["native"] is True
    assert shown["status"] == "native core: on"
    assert shown["why"] == ""
    assert shown["modules"] == [core.__name__] * len(BOUND)


def test_scr_native_0_forces_the_python_references() -> None:
    shown = bound("0")
    assert shown["native"] is False
    assert shown["status"] == "native core: off (pure Python)"
    assert shown["why"] == "SCR_NATIVE=0 forces the pure-Python reference"
    assert shown["modules"] == ["scr.log.merkle", "scr.log.entry", "scr.log.merkle", "scr.route.signing",
                                "scr.route.signing", "scr.route.signing", "scr.event_check", "scr.log.keys",
                                "scr.log.keys", "scr.route.transforms", "scr.route.transforms"]
