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
) -> None:
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
    syscalls.mount(
        "overlay", root, "overlay", 0, f"lowerdir={':'.join(lower)},upperdir={upper},workdir={work}"
    )
    if host_usr:
        usr = os.path.join(root, "usr")
        syscalls.mount("/usr", usr, None, syscalls.MS_BIND | syscalls.MS_REC, None)
        syscalls.mount(
            "none", usr, None, syscalls.MS_BIND | syscalls.MS_REMOUNT | syscalls.MS_RDONLY, None
        )
