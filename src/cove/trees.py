"""Removing a directory tree that a container wrote into, without ever touching what is not
part of it: nothing under a mount point (a host directory bound into it), no symlink followed,
and files a guest marked immutable (`chattr +i`) removed all the same."""

from __future__ import annotations

import contextlib
import errno
import os
from pathlib import Path

FS_IOC_GETFLAGS = 0x80086601
FS_IOC_SETFLAGS = 0x40086602
# Either flag makes unlink fail with EPERM, even for root.
FS_IMMUTABLE_FL = 0x10
FS_APPEND_FL = 0x20
MOUNTINFO = "/proc/self/mountinfo"


def _unescape(field: str) -> str:
    """mountinfo writes space, tab, newline and backslash as octal escapes."""
    return (
        field.replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
    )


def mount_points_under(path: Path, mountinfo: str = MOUNTINFO) -> list[str]:
    """Mount points at or below `path` in this mount namespace. st_dev cannot tell: a bind
    mount from the same file system has the same device number as its parent."""
    top = os.path.realpath(path)
    found = []
    with open(mountinfo) as f:
        for line in f:
            point = _unescape(line.split(" ", 5)[4])
            if point == top or point.startswith(top.rstrip("/") + "/"):
                found.append(point)
    return found


def _clear_flags(path: str) -> None:
    """Lift immutable and append-only from one file or directory (never through a symlink)."""
    import array
    import fcntl

    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
    try:
        fd = os.open(path, flags)
    except OSError:
        return  # a symlink or a device node: neither carries these flags
    try:
        value = array.array("i", [0])
        fcntl.ioctl(fd, FS_IOC_GETFLAGS, value, True)
        if value[0] & (FS_IMMUTABLE_FL | FS_APPEND_FL):
            value[0] &= ~(FS_IMMUTABLE_FL | FS_APPEND_FL)
            fcntl.ioctl(fd, FS_IOC_SETFLAGS, value, True)
    except OSError:
        pass  # a file system without flags: the retry reports the real error
    finally:
        os.close(fd)


def _remove_entry(path: str, is_dir: bool) -> None:
    remove = os.rmdir if is_dir else os.unlink
    try:
        remove(path)
    except PermissionError as e:
        if e.errno != errno.EPERM:
            raise
        _clear_flags(path)
        _clear_flags(os.path.dirname(path))  # an immutable directory forbids unlinking in it
        remove(path)


def remove_tree(path: Path) -> None:
    """rm -r that refuses, before removing anything, a tree with a file system mounted in it."""
    try:
        os.lstat(path)
    except FileNotFoundError:
        return
    if os.path.islink(path) or not os.path.isdir(path):
        _remove_entry(str(path), is_dir=False)
        return
    mounted = mount_points_under(path)
    if mounted:
        raise OSError(
            errno.EBUSY,
            f"refusing to remove {path}: a file system is mounted at {', '.join(mounted)}",
        )
    for root, dirs, files in os.walk(path, topdown=False):
        for name in files:
            _remove_entry(os.path.join(root, name), is_dir=False)
        for name in dirs:
            full = os.path.join(root, name)
            _remove_entry(full, is_dir=not os.path.islink(full))
    with contextlib.suppress(FileNotFoundError):
        _remove_entry(str(path), is_dir=True)
