#!/usr/bin/env python3
"""Drive cove from Python: plan and apply a file, look at each container, stop them.

Run as root: `.venv/bin/python examples/api.py [CONFIG]` (default: $COVE_CONFIG, else
/etc/cove/cove.toml). The tests run it on a file of their own.
"""

from __future__ import annotations

import sys

from cove import api
from cove.errors import CoveError


def main() -> int:
    try:
        host = api.load(sys.argv[1] if len(sys.argv) > 1 else None)
        for action in api.plan(host).actions:
            keys = f" ({', '.join(action.keys)})" if action.keys else ""
            print(f"plan: {action.name} {action.verb}{keys}: {action.reason}")
        failed = [o for o in api.apply(host) if o.error]
        for outcome in failed:
            print(f"failed: {outcome.action.name} {outcome.action.verb}: {outcome.error}")
        for name in sorted(host.config.containers):
            state = api.status(host, name)
            print(f"status: {name} {state.state} leader={state.leader}")
        for name in sorted(host.config.containers):
            if api.stop(host, name):
                print(f"stopped: {name}")
    except CoveError as e:
        print(f"cove: {e.message}", file=sys.stderr)
        return e.exit_code
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
