"""A container's root, mounted in a new private mount namespace by the process that is about to
exec nspawn: when the last process of that namespace exits, every mount goes with it.

Only `os` and libc here: the launch-first start (quickstart) runs this before the rest of cove
is loaded."""

from __future__ import annotations

import os

from cove import syscalls

TYPE_CHECKING = False  # collections.abc would cost the launch-first path 2 ms
if TYPE_CHECKING:
    from collections.abc import Sequence


def mount_root(
    root: str,
    lower: Sequence[str],
    upper: str,
    work: str,
    scratch: str | None,
    scratch_size: str | None,
    host_usr: bool,
    uid_base: int = 0,
) -> None:
    """`uid_base` > 0: private users, the layers shifted to the range at `uid_base` (see
    cove.idmap)."""
    syscalls.unshare(syscalls.CLONE_NEWNS)
    syscalls.mount("none", "/", None, syscalls.MS_REC | syscalls.MS_SLAVE, None)
    if scratch:
        syscalls.mount(
            "tmpfs",
            scratch,
            "tmpfs",
            syscalls.MS_NOSUID | syscalls.MS_NODEV,
            f"mode=0700,size={scratch_size}",
        )
        os.mkdir(upper, 0o755)
        os.mkdir(work, 0o700)
    userns = None
    if uid_base:
        from cove import idmap

        userns = idmap.user_namespace(uid_base)
        lower = [os.path.realpath(p) for p in lower]  # move_mount does not follow links
        for layer in lower:
            idmap.map_in_place(layer, userns)
        os.chown(upper, uid_base, uid_base)  # the root's owner: nspawn reads the range there
    syscalls.mount(
        "overlay", root, "overlay", 0, f"lowerdir={':'.join(lower)},upperdir={upper},workdir={work}"
    )
    if host_usr:
        usr = os.path.join(root, "usr")
        if userns is not None:
            from cove import idmap

            tree = idmap.mapped_tree("/usr", userns, recursive=True)
            try:
                syscalls.move_mount(tree, usr)
            finally:
                os.close(tree)
        else:
            syscalls.mount("/usr", usr, None, syscalls.MS_BIND | syscalls.MS_REC, None)
        syscalls.mount(
            "none", usr, None, syscalls.MS_BIND | syscalls.MS_REMOUNT | syscalls.MS_RDONLY, None
        )
    if userns is not None:
        os.close(userns)
