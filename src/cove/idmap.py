"""Private users on an overlay root: the layers are shifted by ID-mapped mounts.

nspawn cannot ID-map an overlayfs root itself ("ID mapped mounts are apparently not
available"), and chowning it would copy every file of the image up. So the process that is
about to exec nspawn mounts each lower layer (and the host's /usr) ID-mapped onto itself in
its private mount namespace, gives the upper layer's top directory to the range's first UID,
and nspawn runs with `--private-users-ownership=off`: for "pick" it reads the range from the
owner of the root, as it does for a chowned tree, and locks it for the container's life.

The owner of the upper layer is also the record of which range a persistent container's
files were written with: a start with another range is refused instead of booting a guest
whose files belong to nobody.
"""

from __future__ import annotations

import contextlib
import fcntl
import os

from cove import syscalls
from cove.errors import CoveError

RANGE = 0x10000
# nspawn's own bounds for ranges it picks, and the directory of its range locks.
FIRST_BASE = 0x00080000
LAST_BASE = 0x6FFF0000
LOCK_DIR = "/run/systemd/nspawn-uid"


def resolve_base(mode: str, name: str, upper: str) -> int:
    """The first host UID of the container's range for `mode` ("no", "pick" or a first UID),
    checked against what the persistent upper layer `upper` was written with."""
    st = os.stat(upper)
    written = st.st_uid & ~(RANGE - 1)
    used = _has_content(upper)
    if mode == "pick":
        if not used:
            return pick(name)
        if not written:
            raise _mismatch(name, 0, mode)
        if _range_busy(written):
            raise CoveError(
                f"cannot start {name}: its UID range {written}-{written + RANGE - 1} is in use "
                "by another container"
            )
        return written
    base = 0 if mode == "no" else int(mode)
    if used and written != base:
        raise _mismatch(name, written, mode)
    return base


def _mismatch(name: str, written: int, mode: str) -> CoveError:
    was = f"UIDs from {written}" if written else "the host's own UIDs"
    # Said in the message: it reaches `cove start` from the process that execs nspawn.
    return CoveError(
        f"cannot start {name}: its files were written with {was}, and private-users is now "
        f"{mode!r}: set private-users back, or `cove destroy {name}` to start afresh"
    )


def _has_content(path: str) -> bool:
    with os.scandir(path) as entries:
        return any(True for _ in entries)


def pick(name: str) -> int:
    """A free range, the same one for a name as long as it stays free."""
    import hashlib

    span = (LAST_BASE - FIRST_BASE) // RANGE
    for attempt in range(100):
        digest = hashlib.sha256(f"{name}\0{attempt}".encode()).digest()
        base = FIRST_BASE + (int.from_bytes(digest[:8], "big") % span) * RANGE
        if not _range_busy(base) and not _range_known(base):
            return base
    raise CoveError(f"cannot start {name}: found no free UID range for private-users = 'pick'")


def _range_busy(base: int) -> bool:
    """Whether an nspawn (cove's or another's) holds this range's lock."""
    try:
        fd = os.open(os.path.join(LOCK_DIR, str(base)), os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # releases the probe's lock too
    return False


def _range_known(base: int) -> bool:
    """Whether the user database names an ID of the range's ends (nspawn's own check)."""
    import grp
    import pwd

    for uid in (base, base + RANGE - 1):
        for lookup in (pwd.getpwuid, grp.getgrgid):
            with contextlib.suppress(KeyError):
                lookup(uid)
                return True
    return False


def user_namespace(base: int) -> int:
    """A file descriptor of a new user namespace mapping 0-65535 to the range at `base`."""
    ready_r, ready_w = os.pipe()
    done_r, done_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child only holds the namespace open
        code = 1
        try:
            os.close(ready_r)
            os.close(done_w)
            syscalls.unshare(syscalls.CLONE_NEWUSER)
            os.write(ready_w, b"1")
            os.read(done_r, 1)
            code = 0
        finally:
            os._exit(code)
    os.close(ready_w)
    os.close(done_r)
    try:
        if os.read(ready_r, 1) != b"1":
            raise CoveError("private-users: cannot make a user namespace on this kernel")
        for table in ("uid_map", "gid_map"):
            with open(f"/proc/{pid}/{table}", "w") as f:
                f.write(f"0 {base} {RANGE}\n")
        return os.open(f"/proc/{pid}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
    finally:
        os.close(done_w)
        os.close(ready_r)
        os.waitpid(pid, 0)


def mapped_tree(source: str, userns: int, recursive: bool) -> int:
    """A detached, ID-mapped copy of the mount at `source`: a file descriptor for move_mount.
    A file system that cannot be ID-mapped on this kernel is a clear error."""
    try:
        return _idmapped_clone(source, userns, recursive)
    except OSError as e:
        raise CoveError(
            f"private-users: {source} cannot be ID-mapped on this kernel ({e.strerror}): its "
            "file system does not support ID-mapped mounts here; put it on one that does "
            '(ext4, xfs, btrfs, tmpfs) or set private-users = "no"'
        ) from None


def _idmapped_clone(source: str, userns: int, recursive: bool) -> int:
    flags = syscalls.OPEN_TREE_CLONE | (syscalls.AT_RECURSIVE if recursive else 0)
    fd = syscalls.open_tree(source, flags)
    try:
        syscalls.mount_setattr_idmap(fd, userns, recursive)
    except OSError:
        os.close(fd)
        raise
    return fd


def map_in_place(path: str, userns: int, recursive: bool = False) -> None:
    """Mount `path` ID-mapped over itself (in the caller's private mount namespace)."""
    fd = mapped_tree(path, userns, recursive)
    try:
        syscalls.move_mount(fd, path)
    finally:
        os.close(fd)


def unmappable(paths: list[str]) -> list[tuple[str, str]]:
    """Those of `paths` that cannot be ID-mapped here, each with the kernel's reason: checked
    before a start, so that nothing is made for a container nspawn would refuse."""
    if not paths:
        return []
    found = []
    userns = user_namespace(FIRST_BASE)
    try:
        for path in paths:
            try:
                os.close(_idmapped_clone(path, userns, recursive=False))
            except OSError as e:
                found.append((path, e.strerror or str(e)))
    finally:
        os.close(userns)
    return found
