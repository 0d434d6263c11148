"""What the benches share: a [host] table that keeps everything in a work dir of their own,
and the removal of all of it afterwards."""

from __future__ import annotations

import subprocess
from pathlib import Path

from cove import cgroups, quickstart


def host_table(work: Path, group: str, *extra: str) -> str:
    """[host] with the state, runtime and log dirs in `work`, the bench's own cgroup and hosts
    file, and `extra` lines ("key = value")."""
    lines = ["[host]", 'backend = "direct"', f'state-dir = "{work}/state"',
             f'runtime-dir = "{work}/run"', f'log-dir = "{work}/log"', f'cgroup = "{group}"',
             f'hosts-file = "{work}/hosts"', *extra]  # fmt: skip
    return "\n".join(lines) + "\n\n"


def discard(work: Path, group: str, config: Path) -> None:
    """Kill what runs in the bench's cgroup, remove it, the launch cards and the work dir."""
    cg = cgroups.Group(group)
    cg.kill()
    cg.wait_empty(10)
    cg.remove()
    quickstart.forget_all(str(config))
    subprocess.run(["rm", "-rf", "--one-file-system", str(work)], check=False)
