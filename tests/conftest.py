"""Fixtures: an isolated cove host per test, and test images cached on the machine."""

from __future__ import annotations

import fcntl
import os
import secrets
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from cove import cgroups
from cove.model import HostConfig
from cove.traces import Snapshot, snapshot

CACHE = Path(os.environ.get("COVE_TEST_CACHE", "/var/cache/cove-test"))
WORK = Path(os.environ.get("COVE_TEST_WORK", "/var/tmp/cove-tests"))
COVE = [sys.executable, "-m", "cove"]


def _build_once(target: Path, build: object) -> Path:
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
        build(tmp)  # type: ignore[operator]
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


@pytest.fixture(scope="session")
def busybox_image() -> Path:
    """A busybox root built from the machine's busybox-static, cached on the machine."""
    busybox = shutil.which("busybox") or "busybox"
    key = f"{os.stat(busybox).st_size}-{int(os.stat(busybox).st_mtime)}"
    return _build_once(CACHE / f"busybox-{key}", _make_busybox)


@dataclass
class Host:
    """One isolated cove host: its own directories, cgroup and config file."""

    root: Path
    tag: str
    containers: dict[str, str] = field(default_factory=dict)

    @property
    def config(self) -> Path:
        return self.root / "cove.toml"

    @property
    def host(self) -> HostConfig:
        from cove.config import load_config

        return load_config(str(self.config)).host

    def name(self, short: str) -> str:
        """A container name unique on the machine (nspawn keys some files by machine name)."""
        return f"{short}-{self.tag}"

    def write(self, containers: str, host: str = "") -> None:
        base = textwrap.dedent(f"""\
            [host]
            backend = "direct"
            state-dir = "{self.root}/state"
            runtime-dir = "{self.root}/run"
            log-dir = "{self.root}/log"
            config-dir = "{self.root}/etc"
            cgroup = "cove-test-{self.tag}"
            """)
        self.config.write_text(base + textwrap.dedent(host) + "\n" + textwrap.dedent(containers))

    def cove(
        self, *args: str, input: str | None = None, check: bool = False, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "COVE_CONFIG": str(self.config)}
        result = subprocess.run(
            [*COVE, *args],
            capture_output=True,
            text=True,
            input=input,
            env=env,
            timeout=timeout,
            stdin=None if input is not None else subprocess.DEVNULL,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"cove {' '.join(args)} exited {result.returncode}\n"
                f"stdout: {result.stdout}\nstderr: {result.stderr}"
            )
        return result

    def snapshot(self) -> Snapshot:
        return snapshot(self.host, [self.tag])

    def log(self, name: str) -> str:
        path = self.root / "log" / name / "console.log"
        return path.read_text(errors="replace") if path.exists() else ""


@pytest.fixture
def cove_host() -> Iterator[Host]:
    tag = secrets.token_hex(3)
    root = WORK / tag
    root.mkdir(parents=True)
    host = Host(root=root, tag=tag)
    yield host
    _cleanup(host)


def _cleanup(host: Host) -> None:
    """Stop whatever the test left running, then remove its tree and cgroups."""
    if host.config.exists():
        from cove.config import load_config

        try:
            names = list(load_config(str(host.config)).containers)
        except Exception:
            names = []
        if names:
            host.cove("terminate", *names, timeout=60)
    group = cgroups.Group(f"cove-test-{host.tag}")
    group.kill()
    group.wait_empty(10)
    group.remove()
    subprocess.run(["rm", "-rf", "--one-file-system", str(host.root)], check=False)
