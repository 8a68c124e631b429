"""Entry point of a supervised process: ``python -m scr.serve.child`` (started by the supervisor).

It reads its ``ChildArgs`` from the environment, sets its process title, and runs its role.
"""

from __future__ import annotations

import logging
import os
import sys

import msgspec
from setproctitle import setproctitle

from scr.serve.supervisor import CHILD_ENV, ChildArgs

ROLES = ("edge",)


def main() -> int:
    args = msgspec.json.decode(os.environ[CHILD_ENV], type=ChildArgs)
    setproctitle(args.title)
    logging.basicConfig(
        level=args.log_level.upper(),
        format=f"%(asctime)s %(levelname)s {args.title}: %(name)s: %(message)s",
    )
    if args.role == "edge":
        from scr.serve.edge import run_edge

        return run_edge(args)
    print(f"unknown role {args.role!r}; one of {', '.join(ROLES)}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
