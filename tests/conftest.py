"""Fixtures: an isolated cove host per test, and test images cached on the machine."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from cove import cgroups, quickstart
from cove.model import HostConfig
from cove.traces import Snapshot, snapshot
from tests.images import busybox_tree

CACHE = Path(os.environ.get("COVE_TEST_CACHE", "/var/cache/cove-test"))
WORK = Path(os.environ.get("COVE_TEST_WORK", "/var/tmp/cove-tests"))
COVE = [sys.executable, "-m", "cove"]


@pytest.fixture(scope="session")
def busybox_image() -> Path:
    """A busybox root built from the machine's busybox-static, cached on the machine."""
    return busybox_tree(CACHE)


@dataclass
class Host:
    """One isolated cove host: its own directories, cgroup and config file."""

    root: Path
    tag: str
    containers: dict[str, str] = field(default_factory=dict)
    # A network namespace of the test's own: cove runs in it, so every link, address and
    # route it makes on "the host" stays inside, and nothing reaches the machine's network.
    netns: str | None = None

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
            hosts-file = "{self.root}/hosts"
            """)
        self.config.write_text(base + textwrap.dedent(host) + "\n" + textwrap.dedent(containers))

    def cove(
        self, *args: str, input: str | None = None, check: bool = False, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "COVE_CONFIG": str(self.config)}
        inside = ["nsenter", f"--net=/run/netns/{self.netns}", "--"] if self.netns else []
        result = subprocess.run(
            [*inside, *COVE, *args],
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


SLEEPER = 'boot = false\ncommand = ["/bin/sh", "-c", "exec sleep 1000"]\n'


def sleeper(name: str, image: Path | str, extra: str = "") -> str:
    """A container of `image` (busybox) whose command sleeps, with `extra` keys."""
    return f'[containers.{name}]\nimage = "{image}"\n{SLEEPER}{extra}'


@pytest.fixture
def cove_host() -> Iterator[Host]:
    tag = secrets.token_hex(3)
    root = WORK / tag
    root.mkdir(parents=True)
    host = Host(root=root, tag=tag)
    yield host
    _cleanup(host)


@pytest.fixture
def net_host(cove_host: Host) -> Iterator[Host]:
    """A cove host whose "host network" is a namespace made for the test."""
    cove_host.netns = f"nh-{cove_host.tag}"  # not cove-*: the prefix of containers
    subprocess.run(["ip", "netns", "add", cove_host.netns], check=True)
    subprocess.run(["ip", "-n", cove_host.netns, "link", "set", "lo", "up"], check=True)
    yield cove_host
    _cleanup(cove_host)  # stops containers first: they give moved interfaces back here
    for ns in os.listdir("/run/netns"):
        if ns.endswith(cove_host.tag):  # the test's own, and any cove left behind
            subprocess.run(["ip", "netns", "delete", ns], check=False)


def ip_json(netns: str, *args: str) -> list[dict[str, object]]:
    out = subprocess.run(["ip", "-n", netns, "-json", *args], check=True, capture_output=True,
                         text=True).stdout  # fmt: skip
    return json.loads(out) if out.strip() else []


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
    quickstart.forget_all(str(host.config))
    group = cgroups.Group(f"cove-test-{host.tag}")
    group.kill()
    group.wait_empty(10)
    group.remove()
    subprocess.run(["rm", "-rf", "--one-file-system", str(host.root)], check=False)
