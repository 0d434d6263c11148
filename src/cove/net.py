"""Builds a container's network before systemd-nspawn starts and removes it after the
container is gone (DESIGN §7): the steps come from netplan, this module only runs them."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from cove import netnames, proc
from cove.errors import CoveError
from cove.model import Container
from cove.netplan import Step, net_steps

NETNS_DIR = "/run/netns"


def _ip(step: Step, check: bool = True) -> subprocess.CompletedProcess[str]:
    argv = [proc.find_program("ip") or "/usr/sbin/ip", *step[1:]]
    result = proc.run(argv, check=False)
    if check and result.returncode != 0:
        raise CoveError(f"network: `{' '.join(step)}` failed: {result.stderr.strip()}")
    return result


def namespace_exists(c: Container) -> bool:
    return os.path.exists(os.path.join(NETNS_DIR, netnames.namespace(c.name)))


def setup(c: Container, record: Path) -> None:
    """Build the whole network, or nothing: a failed step undoes the ones before it.
    `record` keeps what was moved in from the host, to give it back even if the
    configuration changes while the container runs."""
    steps = net_steps(c)
    if not steps:
        return
    if namespace_exists(c):  # left by a crash: start from nothing
        teardown(c, record)
    record.write_text(json.dumps({"moved": list(c.interfaces), "links": host_links(c)}))
    try:
        for step in steps:
            _ip(step)
    except BaseException:
        teardown(c, record)
        raise


def teardown(c: Container, record: Path) -> None:
    """Give moved interfaces back to this network namespace, then delete the container's
    namespace, which takes its veths (both ends) and macvlans with it."""
    recorded = _read(record)
    moved = recorded.get("moved", list(c.interfaces))
    links = recorded.get("links", host_links(c))
    if namespace_exists(c):
        ns = netnames.namespace(c.name)
        for name in moved:
            _ip(("ip", "-n", ns, "link", "set", name, "down"), check=False)
            _ip(("ip", "-n", ns, "link", "set", name, "netns", str(os.getpid())), check=False)
        # The kernel frees a deleted namespace's veths later, on its own; deleting the host
        # ends now removes both ends before `stop` returns.
        for link in links:
            _ip(("ip", "link", "delete", link), check=False)
        _ip(("ip", "netns", "delete", ns))
    record.unlink(missing_ok=True)


def host_links(c: Container) -> list[str]:
    """The host ends of the container's veths."""
    if not c.private_network:
        return []
    links = [netnames.host_link(c.name, bool(c.host_bridge))] if c.network.wants_veth else []
    return links + [veth.name for veth in c.extra_veths]


def _read(record: Path) -> dict[str, list[str]]:
    """The record of a start, or {} (the caller falls back to the configuration)."""
    try:
        data = json.loads(record.read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {
        key: [str(v) for v in value]
        for key, value in data.items()
        if key in ("moved", "links") and isinstance(value, list)
    }
