"""30 start/stop cycles each of an ephemeral booted container and of a persistent one with a
routed veth and a forwarded port: no failure, no leak (bench/soak.py runs 300)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.conftest import COVE, Host, ip_json
from tests.soak import soak

pytestmark = pytest.mark.e2e
CYCLES = 30


def check(host: Host, name: str) -> None:
    env = {**os.environ, "COVE_CONFIG": str(host.config)}
    inside = ["nsenter", f"--net=/run/netns/{host.netns}", "--"] if host.netns else []
    result = soak([*inside, *COVE], env, name, CYCLES, host.root / "run")
    assert result.failures == []
    assert len(result.cycles) == CYCLES
    # A supervisor's open files do not grow from one start to the next. Samples differ by a
    # few files (taken before or after a launch-first supervisor loaded cove, or while it
    # answers a control connection), so the last ten may exceed the first ten by two at most.
    assert max(result.fds[-10:]) <= max(result.fds[:10]) + 2, result.fds
    doctor = host.cove("doctor")
    assert (doctor.returncode, doctor.stdout) == (0, "nothing left behind\n")


def test_soak_of_an_ephemeral_booted_container(cove_host: Host) -> None:
    name = cove_host.name("soak")
    cove_host.write(f"[containers.{name}]\nephemeral = true\n")
    before = cove_host.snapshot()
    check(cove_host, name)
    assert cove_host.snapshot() == before


def test_soak_of_a_persistent_networked_container(net_host: Host, busybox_image: Path) -> None:
    assert net_host.netns
    name = net_host.name("soaknet")
    net_host.write(f"""
        [containers.{name}]
        image = "{busybox_image}"
        boot = false
        command = ["/bin/httpd", "-f", "-p", "80"]
        private-network = true
        host-address = "10.89.0.1"
        local-address = "10.89.0.2"
        forward-ports = [{{ host-port = 8089, container-port = 80 }}]
        """)
    links_before = {str(link["ifname"]) for link in ip_json(net_host.netns, "link")}
    check(net_host, name)
    assert {str(link["ifname"]) for link in ip_json(net_host.netns, "link")} == links_before
