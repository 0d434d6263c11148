"""Test and benchmark images, built once per machine and cached (DESIGN §9)."""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path


def build_once(target: Path, build: Callable[[Path], None]) -> Path:
    """Build `target` once per machine: in a temporary directory, renamed into place under a
    lock, so concurrent test workers and interrupted runs never see half a tree."""
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f".{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if target.exists():
            return target
        tmp = target.with_name(f".{target.name}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        build(tmp)
        os.rename(tmp, target)
    return target


def _make_busybox(root: Path) -> None:
    busybox = shutil.which("busybox")
    assert busybox, "busybox-static is not installed"
    for d in ("bin", "usr/lib", "etc", "proc", "sys", "dev", "run", "tmp", "var", "root"):
        (root / d).mkdir(parents=True)
    shutil.copy2(busybox, root / "bin/busybox")
    applets = subprocess.run(
        [busybox, "--list"], capture_output=True, text=True, check=True
    ).stdout.split()
    for applet in applets:
        if applet != "busybox":
            (root / "bin" / applet).symlink_to("busybox")
    (root / "usr/lib/os-release").write_text('ID=busybox\nNAME="BusyBox"\n')
    (root / "etc/os-release").symlink_to("../usr/lib/os-release")
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (root / "etc/group").write_text("root:x:0:\n")
    os.chmod(root / "tmp", 0o1777)


def busybox_tree(cache: Path) -> Path:
    """A busybox root from the machine's busybox-static, keyed by that binary."""
    busybox = shutil.which("busybox") or "busybox"
    key = f"{os.stat(busybox).st_size}-{int(os.stat(busybox).st_mtime)}"
    return build_once(cache / f"busybox-{key}", _make_busybox)
