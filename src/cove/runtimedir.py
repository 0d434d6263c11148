"""A running container's runtime directory, and the lock that says a supervisor owns it.

The supervisor holds an exclusive flock on the directory for its whole life, so "is it
running?" is answered by the kernel: a directory whose lock is free belongs to a dead
supervisor (an orphan), whatever PIDs its files mention.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from enum import StrEnum
from pathlib import Path
from typing import Any

from cove.model import HostConfig
from cove.quickstart import NSPAWN_PROPAGATE_DIR, STARTED_FILE


class Liveness(StrEnum):
    ABSENT = "absent"
    RUNNING = "running"
    ORPHANED = "orphaned"


class Busy(Exception):
    """Another process holds the container's lock."""


class RuntimeDir:
    def __init__(self, host: HostConfig, name: str) -> None:
        self.path = Path(host.runtime_dir, name)

    @classmethod
    def at(cls, path: Path) -> RuntimeDir:
        """The runtime dir at `path`, whichever file's [host] it belongs to."""
        runtime = cls.__new__(cls)
        runtime.path = path
        return runtime

    @property
    def notify(self) -> Path:
        return self.path / "notify"

    @property
    def control(self) -> Path:
        return self.path / "control"

    @property
    def net_record(self) -> Path:
        """What the container's network took from the host (see net.setup)."""
        return self.path / "net.json"

    @property
    def status_file(self) -> Path:
        return self.path / "status.json"

    @property
    def started_file(self) -> Path:
        """The settings the running instance was started with (plan.settings_of), so that a
        plan compares the file with what runs, however it was started."""
        return self.path / STARTED_FILE

    def write_started(self, settings: dict[str, Any]) -> None:
        write_atomic(self.started_file, json.dumps(settings, sort_keys=True))

    def read_started(self) -> dict[str, Any] | None:
        try:
            data = json.loads(self.started_file.read_text())
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def claim(self) -> tuple[int, bool]:
        """Create or take over the directory with its lock held: (fd, was it left over)."""
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        while True:
            try:
                self.path.mkdir(mode=0o700)
                leftover = False
            except FileExistsError:
                leftover = True
            try:
                fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY)
            except FileNotFoundError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise Busy(str(self.path)) from None
            if os.fstat(fd).st_nlink == 0:  # removed by its owner while we waited
                os.close(fd)
                continue
            return fd, leftover

    def liveness(self) -> Liveness:
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY)
        except FileNotFoundError:
            return Liveness.ABSENT
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return Liveness.RUNNING
        finally:
            os.close(fd)
        return Liveness.ORPHANED

    def read_status(self) -> dict[str, Any]:
        try:
            data = json.loads(self.status_file.read_text())
        except (FileNotFoundError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def write_status(self, status: dict[str, Any]) -> None:
        write_atomic(self.status_file, json.dumps(status, sort_keys=True) + "\n")


NSPAWN_PROPAGATE = Path(NSPAWN_PROPAGATE_DIR)


def remove_nspawn_leftovers(name: str, runtime: Path) -> None:
    """nspawn removes its per-machine propagation directory only when it exits cleanly; after a
    kill it stays. It is empty by then, and rmdir never removes anything else. The lock file of
    a UID range cove picked for it is cove's to remove (see cove.idmap)."""
    from cove.rootfs import release_users_range

    with contextlib.suppress(OSError):
        (NSPAWN_PROPAGATE / name).rmdir()
    release_users_range(str(runtime))


def write_atomic(path: Path, text: str, mode: int = 0o600) -> None:
    """Readers see the old or the new text, never half. No fsync: runtime state is meant to
    vanish with a reboot, and a start must not wait for the disk."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)
