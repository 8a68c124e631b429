"""Stopping asyncio tasks for sure.

On Python 3.11 a cancellation can be lost: ``asyncio.wait_for`` returns the result instead of
raising ``CancelledError`` when its inner wait completes at the moment it is cancelled (fixed
in 3.12), and nats-py's ``fetch`` waits that way. A task whose cancellation was lost goes on
running, and ``await task`` after ``task.cancel()`` then waits for as long as it runs: an
ownership loop stuck there keeps a partition's consumer alive after its lock moved on.
"""

from __future__ import annotations

import asyncio

RECANCEL_S = 0.5  # how long to wait for a cancelled task before cancelling it again


async def stop_task(task: asyncio.Task[object], recancel_s: float = RECANCEL_S) -> None:
    """Cancel ``task`` and wait until it has ended, cancelling again while it runs on."""
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=recancel_s)
    if not task.cancelled():
        task.exception()  # retrieved (an error of its own), so asyncio does not report it lost
