"""Per-container cgroups for the direct backend (DESIGN §5).

On a hybrid host (cgroup v1 controllers, `name=systemd`, cgroup2 at /sys/fs/cgroup/unified) a
process is placed in the unified, name=systemd, memory and pids hierarchies; on a pure cgroup2
host only in the one hierarchy. A new v1 cpuset cgroup cannot be joined as is, so it is skipped.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from functools import cache
from pathlib import Path

CGROUP_FS = Path("/sys/fs/cgroup")
V1_HIERARCHIES = ("unified", "systemd", "memory", "pids")


@cache
def hierarchies() -> tuple[Path, ...]:
    if (CGROUP_FS / "cgroup.controllers").exists():
        return (CGROUP_FS,)
    return tuple(CGROUP_FS / h for h in V1_HIERARCHIES if (CGROUP_FS / h / "cgroup.procs").exists())


class Group:
    """One cgroup path (such as cove/web/nspawn) in every hierarchy cove uses."""

    def __init__(self, relative: str) -> None:
        self.relative = relative.strip("/")

    def __repr__(self) -> str:
        return f"Group({self.relative!r})"

    def paths(self) -> list[Path]:
        return [h / self.relative for h in hierarchies()]

    def child(self, name: str) -> Group:
        return Group(f"{self.relative}/{name}")

    def create(self) -> None:
        for path in self.paths():
            for _ in range(10):  # a parent may vanish under us: see remove_if_empty
                try:
                    path.mkdir(parents=True, exist_ok=True)
                    break
                except FileNotFoundError:
                    continue

    def join(self, pid: int = 0) -> None:
        self.create()
        for path in self.paths():
            (path / "cgroup.procs").write_text(f"{pid}\n")

    def exists(self) -> bool:
        return any(p.is_dir() for p in self.paths())

    def pids(self) -> set[int]:
        """Every process in this cgroup and below it."""
        found: set[int] = set()
        for path in self.paths():
            if not path.is_dir():
                continue
            for procs in path.rglob("cgroup.procs"):
                try:
                    found.update(int(p) for p in procs.read_text().split())
                except OSError:
                    continue
        return found

    def kill(self, exclude: int | None = None) -> None:
        """SIGKILL everything below, as cgroup.kill does, but without killing `exclude`."""
        unified = self.paths()[0] / "cgroup.kill"
        if exclude is None and unified.exists():
            try:
                unified.write_text("1\n")
                return
            except OSError:
                pass
        for pid in self.pids() - {exclude}:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def wait_empty(self, timeout: float, exclude: int | None = None) -> bool:
        deadline = time.monotonic() + timeout
        while self.pids() - {exclude}:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True

    def remove_if_empty(self) -> None:
        """Remove this cgroup if no child cgroup or process is left in it (a best effort:
        another container may be starting below it right now)."""
        for path in self.paths():
            try:
                path.rmdir()
            except OSError:
                continue

    def remove(self) -> None:
        """rmdir bottom-up; cgroups still holding processes are left and reported by doctor."""
        for path in self.paths():
            if not path.is_dir():
                continue
            for directory in sorted((d for d in path.rglob("*") if d.is_dir()), reverse=True):
                _rmdir(directory)
            _rmdir(path)


def _rmdir(path: Path) -> None:
    for _ in range(50):
        try:
            path.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError:
            time.sleep(0.01)
