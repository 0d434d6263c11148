"""Everything cove can leave on a host, as comparable data: the basis of the ephemeral
guarantee ("no trace after stop") in the tests and of `cove doctor` later."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from cove import cgroups
from cove.model import HostConfig

NSPAWN_RUN = Path("/run/systemd/nspawn")


@dataclass(frozen=True)
class Snapshot:
    mounts: frozenset[str]
    cgroups: frozenset[str]
    files: frozenset[str]
    netns: frozenset[str]
    links: frozenset[str]
    nspawn: frozenset[str]

    def difference(self, other: Snapshot) -> dict[str, list[str]]:
        """What `other` has that this snapshot lacks, and the reverse, by kind."""
        diff: dict[str, list[str]] = {}
        for kind in self.__dataclass_fields__:
            mine, theirs = getattr(self, kind), getattr(other, kind)
            changes = [f"+ {x}" for x in sorted(theirs - mine)]
            changes += [f"- {x}" for x in sorted(mine - theirs)]
            if changes:
                diff[kind] = changes
        return diff


def _walk(top: str, skip: str = "") -> set[str]:
    """Every path below `top`, leaving out `skip` and what is below it."""
    found: set[str] = set()
    for root, dirs, files in os.walk(top):
        dirs[:] = [d for d in dirs if os.path.join(root, d) != skip]
        found.update(os.path.join(root, n) for n in dirs + files)
    return found


def snapshot(host: HostConfig, names: list[str]) -> Snapshot:
    """Host state cove may touch; `names` limits the machine-wide bits to these containers."""
    dirs = (host.state_dir, host.runtime_dir)
    with open("/proc/self/mountinfo") as f:
        mounts = {line.split()[4] for line in f}
    groups = set()
    for hierarchy in cgroups.hierarchies():
        top = hierarchy / host.cgroup
        if top.is_dir():
            groups.add(str(top))
            groups.update(str(p) for p in top.rglob("*") if p.is_dir())
    # The image store holds shared images, not traces of any one container.
    files = {f for d in dirs for f in _walk(d, skip=str(host.image_store))}
    netns = set(os.listdir("/run/netns")) if os.path.isdir("/run/netns") else set()
    netns = {ns for ns in netns if ns.startswith("cove-") and any(n in ns for n in names)}
    links = set(os.listdir("/sys/class/net"))
    nspawn = {str(p) for p in _walk(str(NSPAWN_RUN)) if any(n in p for n in names)}
    return Snapshot(
        mounts=frozenset(m for m in mounts if m.startswith(dirs) or any(n in m for n in names)),
        cgroups=frozenset(groups),
        files=frozenset(files),
        netns=frozenset(netns),
        links=frozenset(links),
        nspawn=frozenset(nspawn),
    )
