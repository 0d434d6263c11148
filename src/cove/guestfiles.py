"""The `files` key: declared content written into a container's root at every start.

The content is staged in the runtime dir (the systemd unit can only pass paths), then copied
into the mounted root just before nspawn starts. The guest owns its root and may have put a
symlink anywhere, so nothing here follows one: each directory is opened relative to its parent
with O_NOFOLLOW, a symlink where a declared file goes is replaced, and a symlinked directory
on the way is an error rather than a write somewhere on the host.
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path

from cove.errors import CoveError
from cove.trees import remove_tree

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC


def stage(files: tuple[tuple[str, str], ...], staging: Path) -> None:
    remove_tree(staging)
    for path, content in files:
        target = staging / path.lstrip("/")
        target.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        target.write_text(content)


def install(staging: str, root: str) -> None:
    """Copy every staged file to the same path under `root`, never following a symlink."""
    for directory, _dirs, names in os.walk(staging):
        for name in names:
            relative = os.path.relpath(os.path.join(directory, name), staging)
            with open(os.path.join(directory, name), "rb") as f:
                _write_under(root, relative, f.read())


def write_into(files: tuple[tuple[str, str], ...], root: str) -> None:
    """Write the declared files under `root` straight away: a running container's root is
    /proc/LEADER/root, which sees the guest's own mounts."""
    for path, content in files:
        _write_under(root, path.lstrip("/"), content.encode())


def _write_under(root: str, relative: str, content: bytes) -> None:
    *parents, leaf = relative.split("/")
    fd = os.open(root, DIR_FLAGS & ~os.O_NOFOLLOW)  # the root is ours (maybe /proc/PID/root)
    # Under private users the root belongs to the first UID of the guest's range (any first
    # UID, not only multiples of 65536): what the host's root writes here is the guest root's.
    owner = os.fstat(fd).st_uid
    try:
        for part in parents:
            with contextlib.suppress(FileExistsError):
                os.mkdir(part, 0o755, dir_fd=fd)
            try:
                child = os.open(part, DIR_FLAGS, dir_fd=fd)
            except OSError as e:
                raise CoveError(
                    f"files: cannot write /{relative}: /{'/'.join(parents)} is not a plain "
                    f"directory in the container ({e.strerror})",
                    hint="declare the file at its real path, without symlinks on the way",
                ) from None
            _give(child, owner)
            os.close(fd)
            fd = child
        with contextlib.suppress(FileNotFoundError):
            if stat.S_ISLNK(os.stat(leaf, dir_fd=fd, follow_symlinks=False).st_mode):
                os.unlink(leaf, dir_fd=fd)
        try:
            out = os.open(leaf, FILE_FLAGS, 0o644, dir_fd=fd)
        except OSError as e:
            raise CoveError(
                f"files: cannot write /{relative} in the container: {e.strerror}"
            ) from None
        _give(out, owner)
        with os.fdopen(out, "wb") as f:
            f.write(content)
    finally:
        os.close(fd)


def _give(fd: int, owner: int) -> None:
    """Hand what the host's root made (owner 0) to the guest's root `owner`, if shifted."""
    if owner and os.fstat(fd).st_uid == 0:
        os.fchown(fd, owner, owner)
