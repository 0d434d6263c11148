"""Roots: the host image's generated /etc, and the overlay assembled in a private mount
namespace just before nspawn runs, so no mount outlives the container (DESIGN §6)."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from cove import guestfiles, overlay
from cove.errors import CoveError
from cove.hostetc import HOST_ETC, MERGED_USR, host_base_key, write_container_layer
from cove.render import RootLayout
from cove.trees import remove_tree

EMPTY_DIRS = (
    "dev",
    "proc",
    "sys",
    "run",
    "tmp",
    "var",
    "var/tmp",
    "root",
    "home",
    "srv",
    "mnt",
    "opt",
    "media",
    "usr",
)


def ensure_host_base(link: Path) -> Path:
    """Point `link` at the generated root for the host's current /etc, building it once.

    Each tree is immutable once renamed into place; a running container keeps the tree it
    was mounted with even when the link moves on (overlayfs resolves it at mount time)."""
    target = link.with_name(f"host-{host_base_key()}")
    if not target.is_dir():
        link.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        tmp = link.with_name(f".{target.name}.{os.getpid()}.tmp")
        try:
            write_host_base(tmp)
            os.rename(tmp, target)
        except OSError:
            remove_tree(tmp)
            if not target.is_dir():  # not merely lost a race with a concurrent start
                raise
    with contextlib.suppress(FileNotFoundError):
        if os.readlink(link) == target.name:
            return target
    tmp_link = link.with_name(f".{link.name}.{os.getpid()}.tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp_link.unlink()
    tmp_link.symlink_to(target.name)
    os.replace(tmp_link, link)
    return target


def write_host_base(base: Path) -> None:
    """A minimal root that, with the host's /usr mounted on it, boots the host's systemd."""
    import shutil

    base.mkdir(mode=0o755, parents=True)
    for link in MERGED_USR:
        host = Path("/", link)
        if host.is_symlink():
            (base / link).symlink_to(os.readlink(host))
        elif host.is_dir() and link in ("bin", "sbin", "lib"):
            raise CoveError(
                f'image = "host" needs a merged-/usr host, but /{link} is a directory',
                hint="use a directory image instead",
            )
    for d in EMPTY_DIRS:
        (base / d).mkdir(parents=True, exist_ok=True)
    os.chmod(base / "tmp", 0o1777)
    os.chmod(base / "var/tmp", 0o1777)
    os.chmod(base / "root", 0o700)
    etc = base / "etc"
    etc.mkdir(mode=0o755)
    for entry in HOST_ETC:
        source = Path("/etc", entry)
        if source.is_symlink() or source.is_file():
            shutil.copy2(source, etc / entry, follow_symlinks=False)
        elif source.is_dir():
            shutil.copytree(source, etc / entry, symlinks=True)
    _write_locked_shadow(etc)
    # Empty: systemd derives a fresh machine ID from the container UUID (DESIGN §6).
    (etc / "machine-id").write_text("")
    (etc / "os-release").symlink_to("../usr/lib/os-release")


def _write_locked_shadow(etc: Path) -> None:
    """Accounts without passwords: the host's hashes never enter a container."""
    shadow_gid = next(
        (
            int(fields[2])
            for fields in (line.split(":") for line in (etc / "group").read_text().splitlines())
            if len(fields) > 2 and fields[0] == "shadow" and fields[2].isdigit()
        ),
        None,
    )
    for table, source in (("shadow", "passwd"), ("gshadow", "group")):
        names = [
            line.split(":", 1)[0]
            for line in (etc / source).read_text().splitlines()
            if line and not line.startswith("#")
        ]
        if table == "shadow":
            body = "".join(f"{n}:*:19000:0:99999:7:::\n" for n in names)
        else:
            body = "".join(f"{n}:*::\n" for n in names)
        path = etc / table
        path.write_text(body)
        os.chmod(path, 0o640)
        # As on the host: group `shadow` may read them (chage, unix_chkpwd are setgid shadow).
        if shadow_gid is not None:
            os.chown(path, 0, shadow_gid)


def prepare(layout: RootLayout, name: str) -> None:
    """Directories and files the layout needs, made before the private namespace exists."""
    Path(layout.root).mkdir(parents=True, exist_ok=True)
    if layout.host_base:
        ensure_host_base(Path(layout.host_base))
    if layout.base:
        write_container_layer(Path(layout.base), name)
    if layout.files_dir:
        guestfiles.stage(layout.files, Path(layout.files_dir))
    if layout.scratch:
        Path(layout.scratch).mkdir(parents=True, exist_ok=True)
    else:
        private_dirs(os.path.dirname(layout.upper))
        for d in (layout.upper, layout.work):
            Path(d).mkdir(exist_ok=True, mode=0o755)


def private_dirs(path: str) -> None:
    """`path`, its parent and the state dir above them (state-dir/containers/NAME), made
    root-only: what a container wrote is nobody else's to read."""
    for d in (os.path.dirname(os.path.dirname(path)), os.path.dirname(path), path):
        os.makedirs(d, mode=0o700, exist_ok=True)
    os.chmod(path, 0o700)


def assemble(layout: RootLayout) -> int:
    """Mount the root in a new private mount namespace (call it in the process that execs
    nspawn), then put the declared files in it. Returns the first UID of the guest's range
    (0: not shifted); see with_users_range()."""
    uid_base = users_base(layout)
    overlay.mount_root(
        layout.root,
        layout.lower,
        layout.upper,
        layout.work,
        layout.scratch,
        layout.scratch_size,
        layout.host_usr,
        uid_base,
    )
    if layout.files_dir:
        guestfiles.install(layout.files_dir, layout.root)
    return uid_base


def users_base(layout: RootLayout) -> int:
    """The first host UID of the guest's range: 0 unless private-users shifts it. A
    persistent container is held to the range its files were written with; a picked range
    is locked for nspawn and recorded in the runtime dir, for its release at the end."""
    from cove import idmap

    if layout.private_users == "pick":
        fresh = bool(layout.scratch) or not os.listdir(layout.upper)
        base = idmap.claim_pick(layout.name, layout.upper, fresh)
        with open(uid_range_record(layout.root), "w") as f:
            f.write(f"{base}\n")
        return base
    if layout.scratch:  # a fresh upper layer: nothing written yet
        return int(layout.private_users) if layout.private_users.isdigit() else 0
    return idmap.resolve_base(layout.private_users, layout.name, layout.upper)


def uid_range_record(root: str) -> str:
    """runtime-dir/NAME/uid-range, beside the root's mount point."""
    return os.path.join(os.path.dirname(root), "uid-range")


def with_users_range(argv: list[str], base: int) -> list[str]:
    """nspawn's argv with "pick" replaced by the range cove picked and locked for it."""
    return [f"--private-users={base}:65536" if a == "--private-users=pick" else a for a in argv]


def release_users_range(runtime: str) -> None:
    """After the container: the lock file of the range it was picked, if any."""
    from cove import idmap

    try:
        with open(os.path.join(runtime, "uid-range")) as f:
            base = int(f.read().strip())
    except (OSError, ValueError):
        return
    idmap.release(base)
