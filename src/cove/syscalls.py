"""The few Linux system calls Python 3.11 lacks: unshare, mount, prctl, and the new mount API
(open_tree, mount_setattr, move_mount) that ID-mapped mounts need."""

from __future__ import annotations

import ctypes
import os

CLONE_NEWNS = 0x00020000
CLONE_NEWUSER = 0x10000000
MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_REMOUNT = 0x20
MS_BIND = 0x1000
MS_REC = 0x4000
MS_SLAVE = 1 << 19
PR_SET_CHILD_SUBREAPER = 36
PR_SET_PDEATHSIG = 1


_LIBC: list[ctypes.CDLL] = []  # loaded once; functools would cost the launch-first path


def _libc() -> ctypes.CDLL:
    if not _LIBC:
        _LIBC.append(ctypes.CDLL(None, use_errno=True))
    return _LIBC[0]


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def unshare(flags: int) -> None:
    _check(_libc().unshare(flags), "unshare")


def mount(source: str, target: str, fstype: str | None, flags: int, data: str | None) -> None:
    _check(
        _libc().mount(
            source.encode(),
            target.encode(),
            fstype.encode() if fstype else None,
            ctypes.c_ulong(flags),
            data.encode() if data else None,
        ),
        f"mount {target}",
    )


def prctl(option: int, value: int) -> None:
    _check(_libc().prctl(option, ctypes.c_ulong(value), 0, 0, 0), "prctl")


# The new mount API has one number on every architecture Linux added it to at once.
_SYS_OPEN_TREE = 428
_SYS_MOVE_MOUNT = 429
_SYS_MOUNT_SETATTR = 442
OPEN_TREE_CLONE = 1
AT_EMPTY_PATH = 0x1000
AT_RECURSIVE = 0x8000
MOVE_MOUNT_F_EMPTY_PATH = 0x4
MOUNT_ATTR_IDMAP = 0x00100000


class _MountAttr(ctypes.Structure):
    _fields_ = (
        ("attr_set", ctypes.c_uint64),
        ("attr_clr", ctypes.c_uint64),
        ("propagation", ctypes.c_uint64),
        ("userns_fd", ctypes.c_uint64),
    )


def open_tree(path: str, flags: int) -> int:
    """A detached copy of the mount tree at `path` (OPEN_TREE_CLONE): its file descriptor."""
    fd = _libc().syscall(
        _SYS_OPEN_TREE, -100, path.encode(), ctypes.c_uint(flags | os.O_CLOEXEC)
    )  # -100: AT_FDCWD
    if fd < 0:
        _check(fd, f"open_tree {path}")
    return int(fd)


def mount_setattr_idmap(fd: int, userns_fd: int, recursive: bool) -> None:
    attr = _MountAttr(MOUNT_ATTR_IDMAP, 0, 0, userns_fd)
    flags = AT_EMPTY_PATH | (AT_RECURSIVE if recursive else 0)
    result = _libc().syscall(
        _SYS_MOUNT_SETATTR, fd, b"", ctypes.c_uint(flags), ctypes.byref(attr),
        ctypes.c_size_t(ctypes.sizeof(attr)),
    )  # fmt: skip
    _check(result, "mount_setattr")


def move_mount(fd: int, target: str) -> None:
    """Attach the detached tree `fd` at `target`."""
    result = _libc().syscall(
        _SYS_MOVE_MOUNT, fd, b"", -100, target.encode(), ctypes.c_uint(MOVE_MOUNT_F_EMPTY_PATH)
    )
    _check(result, f"move_mount {target}")
