"""Private users on an overlay root: the layers are shifted by ID-mapped mounts.

nspawn cannot ID-map an overlayfs root itself ("ID mapped mounts are apparently not
available"), and chowning it would copy every file of the image up. So the process that is
about to exec nspawn mounts each lower layer (and the host's /usr) ID-mapped onto itself in
its private mount namespace, gives the upper layer's top directory to the range's first UID,
and nspawn runs with `--private-users-ownership=off`. For "pick", cove chooses the range and
locks it as nspawn's own pick would (an open-file-description lock on
/run/systemd/nspawn-uid/FIRST_UID) before mapping anything, then hands nspawn that exact range:
the lock, inherited through exec, is held by nspawn for the container's life, so no other
start (cove's or nspawn's) can take the range between the choice and the boot.

The owner of the upper layer is also the record of which range a persistent container's
files were written with: a start with another range is refused instead of booting a guest
whose files belong to nobody.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import struct

from cove import syscalls
from cove.errors import CoveError

RANGE = 0x10000
# nspawn's own bounds for ranges it picks, and the directory of its range locks.
FIRST_BASE = 0x00080000
LAST_BASE = 0x6FFF0000
LOCK_DIR = "/run/systemd/nspawn-uid"


def resolve_base(mode: str, name: str, upper: str) -> int:
    """The first host UID of the container's range for `mode` ("no", "identity", "pick" or a
    first UID), checked against what the persistent upper layer `upper` was written with."""
    written = os.stat(upper).st_uid  # the top directory is given to the first UID
    used = _has_content(upper)
    if mode == "pick":
        if not used:
            return pick(name)
        if not FIRST_BASE <= written <= LAST_BASE or written % RANGE:
            raise _mismatch(name, written, mode, upper)  # not a range "pick" would choose
        return written
    base = int(mode) if mode.isdigit() else 0
    if used and written != base:
        raise _mismatch(name, written, mode, upper)
    return base


def _mismatch(name: str, written: int, mode: str, upper: str) -> CoveError:
    was = f"UIDs from {written}" if written else "the host's own UIDs"
    wanted = mode if mode.isdigit() else f'"{mode}"'
    back = str(written) if written else '"no" or "identity"'
    if mode != "pick" and written and FIRST_BASE <= written <= LAST_BASE:
        back += ' or "pick"'
    # All said in the message: it reaches `cove start` from the process that execs nspawn.
    return CoveError(
        f"{name}'s files were written with {was}, and private-users is now {wanted}: set "
        f"private-users = {back} again, or start afresh without its files (in "
        f"{os.path.dirname(upper)}): take it out of its file, `cove destroy {name}`, then "
        "declare it again"
    )


def _has_content(path: str) -> bool:
    with os.scandir(path) as entries:
        return any(True for _ in entries)


def pick(name: str, passed: frozenset[int] = frozenset()) -> int:
    """A free range, the same one for a name as long as it stays free (`passed`: ranges
    found taken meanwhile)."""
    import hashlib

    span = (LAST_BASE - FIRST_BASE) // RANGE
    for attempt in range(100):
        digest = hashlib.sha256(f"{name}\0{attempt}".encode()).digest()
        base = FIRST_BASE + (int.from_bytes(digest[:8], "big") % span) * RANGE
        if base not in passed and not _range_busy(base) and not _range_known(base):
            return base
    raise CoveError(f'found no free UID range for {name} (private-users = "pick")')


def _range_busy(base: int) -> bool:
    """Whether an nspawn (cove's or another's) holds this range's lock. nspawn takes an
    open-file-description record lock, which flock() cannot see: ask with F_OFD_GETLK."""
    try:
        fd = os.open(os.path.join(LOCK_DIR, str(base)), os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        answer = fcntl.fcntl(fd, fcntl.F_OFD_GETLK, _lock_request(fcntl.F_WRLCK))
        return bool(struct.unpack("hh4xqqi4x", answer)[0] != fcntl.F_UNLCK)
    finally:
        os.close(fd)


def claim_pick(name: str, upper: str, fresh: bool) -> int:
    """The range for private-users = "pick", locked (see claim()): the one the upper layer's
    files were written with, else a free one for the name."""
    if not fresh:
        base = resolve_base("pick", name, upper)
        if claim(base) is None:
            raise CoveError(
                f"the UID range {base}-{base + RANGE - 1} of {name}'s files is in use by "
                "another container: stop that one first"
            )
        return base
    passed: set[int] = set()
    while True:
        base = pick(name, frozenset(passed))
        if claim(base) is not None:
            return base
        passed.add(base)  # taken between the look and the lock


def claim(base: int) -> int | None:
    """Lock the range as nspawn's own pick does (same file, same kind of lock), or None when
    someone holds it. The descriptor is made inheritable: nspawn, exec'd in this process,
    keeps the lock for the container's life. `release()` removes the file afterwards."""
    os.makedirs(LOCK_DIR, mode=0o755, exist_ok=True)
    fd = os.open(os.path.join(LOCK_DIR, str(base)), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.fcntl(fd, fcntl.F_OFD_SETLK, _lock_request(fcntl.F_WRLCK))
    except OSError:
        os.close(fd)
        return None
    os.set_inheritable(fd, True)
    return fd


def release(base: int) -> None:
    """Remove the range's lock file once nobody holds it (as nspawn removes its own): taken
    first, so that a file someone else locked meanwhile is never removed."""
    path = os.path.join(LOCK_DIR, str(base))
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        return
    try:
        fcntl.fcntl(fd, fcntl.F_OFD_SETLK, _lock_request(fcntl.F_WRLCK))
        os.unlink(path)
    except OSError:
        pass  # held: a running container's
    finally:
        os.close(fd)


def _lock_request(kind: int) -> bytes:
    """struct flock for the whole file (l_pid must be 0 for open-file-description locks)."""
    return struct.pack("hh4xqqi4x", kind, os.SEEK_SET, 0, 0, 0)


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
    A file system that cannot be ID-mapped here is a clear error."""
    try:
        return _idmapped_clone(source, userns, recursive)
    except OSError as e:
        raise CoveError(
            f"private-users: {source} is on a file system that cannot be ID-mapped here "
            f"({describe_refusal(source, e)}); put it on one that can (ext4, xfs, btrfs, "
            'tmpfs) or set private-users = "no"'
        ) from None


def describe_refusal(path: str, error: OSError) -> str:
    """The file system type of `path` and the kernel's answer, for messages."""
    kind = file_system_type(path)
    return f"{kind}: {error.strerror}" if kind else str(error.strerror)


def file_system_type(path: str) -> str | None:
    """The type of the file system mounted deepest above `path`, from mountinfo."""
    target = os.path.realpath(path)
    best, kind = "", None
    for point, fstype in _mounts():
        if _within(target, point) and len(point) >= len(best):
            best, kind = point, fstype
    return kind


def mounts_below(path: str) -> list[str]:
    """Mount points strictly inside `path`: nspawn (252) cannot ID-map a bind mount that has
    any ("Failed to map ids for bind mount: Device or resource busy")."""
    target = os.path.realpath(path)
    return sorted({p for p, _ in _mounts() if p != target and _within(p, target)})


def _within(path: str, top: str) -> bool:
    return path == top or path.startswith(top.rstrip("/") + "/")


def _mounts() -> list[tuple[str, str]]:
    """(mount point, file system type) of every mount this process sees."""
    found = []
    with contextlib.suppress(OSError), open("/proc/self/mountinfo") as f:
        for line in f:
            fields, _, rest = line.partition(" - ")
            point = fields.split()[4].replace("\\040", " ").replace("\\011", "\t")
            found.append((point, rest.split()[0]))
    return found


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
    """Those of `paths` that cannot be ID-mapped here (with what is below them, as nspawn
    maps a bind mount), each with the reason: checked before a start, so that nothing is
    made for a container nspawn would refuse."""
    if not paths:
        return []
    found = []
    userns = user_namespace(FIRST_BASE)
    try:
        for path in paths:
            try:
                os.close(_idmapped_clone(path, userns, recursive=True))
            except OSError as e:
                found.append((path, describe_refusal(path, e)))
    finally:
        os.close(userns)
    return found
