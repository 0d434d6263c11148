"""Faults on the direct backend: whatever is killed or removed, the next command works without
manual repair, and `cove doctor` finds nothing once everything is stopped (or finds what a
dead supervisor left, and `--fix` removes it without touching a running container)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import COVE, SLEEPER, Host, ip_json, sleeper

pytestmark = pytest.mark.e2e


def networked(host: Host, short: str, image: Path, n: int) -> str:
    name = host.name(short)
    return f"""
        [containers.{name}]
        image = "{image}"
        {SLEEPER}
        ephemeral = true
        private-network = true
        host-address = "10.87.{n}.1"
        local-address = "10.87.{n}.2"
        forward-ports = [{{ host-port = {8100 + n}, container-port = 80 }}]
        """


def status(host: Host, name: str) -> dict[str, object]:
    result: dict[str, object] = json.loads(host.cove("status", name, "--json").stdout)
    return result


def supervisor_status(host: Host, name: str) -> dict[str, object]:
    """What the supervisor writes: its PID, nspawn's, the leader's, its state."""
    result: dict[str, object] = json.loads((host.root / "run" / name / "status.json").read_text())
    return result


def doctor_is_clean(host: Host) -> None:
    result = host.cove("doctor")
    assert (result.returncode, result.stdout) == (0, "nothing left behind\n"), result.stdout


def wait_for(predicate: object, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def test_doctor_fixes_what_a_killed_supervisor_left_and_spares_the_running(
    net_host: Host, busybox_image: Path
) -> None:
    assert net_host.netns
    victim, bystander = net_host.name("victim"), net_host.name("bystander")
    net_host.write(networked(net_host, "victim", busybox_image, 1)
                   + networked(net_host, "bystander", busybox_image, 2))  # fmt: skip
    net_host.cove("start", victim, bystander, check=True)
    doctor_is_clean(net_host)
    supervisor = supervisor_status(net_host, victim)["supervisor"]
    assert isinstance(supervisor, int)
    os.kill(supervisor, signal.SIGKILL)  # the supervisor this test's cove started
    wait_for(lambda: status(net_host, victim)["state"] == "orphaned")

    # Its guest still runs: a running container, which doctor names but never touches.
    found = net_host.cove("doctor")
    assert found.returncode == 1
    assert f"orphaned container: {victim} runs without its supervisor" in found.stdout
    spared = net_host.cove("doctor", "--fix")
    assert f"`cove stop {victim}` stops it" in spared.stdout
    assert status(net_host, victim)["state"] == "orphaned"
    # Its processes killed too (as a crash would): what is left is debris, and --fix takes it.
    from cove import cgroups

    group = cgroups.Group(f"cove-test-{net_host.tag}/{victim}")
    group.kill()  # the processes of the container this test started
    group.wait_empty(10)
    found = net_host.cove("doctor")
    kinds = {line.split(":")[0] for line in found.stdout.splitlines()}
    assert {"runtime dir", "cgroup"} <= kinds, found.stdout
    assert bystander not in found.stdout
    assert "cove doctor --fix" in found.stderr

    fixed = net_host.cove("doctor", "--fix")
    assert fixed.returncode == 0, fixed.stdout
    assert fixed.stdout.endswith("nothing left behind\n")
    assert status(net_host, victim)["state"] == "down"
    assert status(net_host, bystander)["state"] == "up"
    links = [str(link["ifname"]) for link in ip_json(net_host.netns, "link")]
    assert "ve-" + victim[:12] not in " ".join(links)
    assert any(link.startswith("ve-bystander"[:10]) for link in links)
    rules = subprocess.run(["nsenter", f"--net=/run/netns/{net_host.netns}", "nft", "list",
                            "table", "inet", "cove"], capture_output=True, text=True)  # fmt: skip
    assert f"fwd-{bystander}" in rules.stdout and f"fwd-{victim}" not in rules.stdout
    net_host.cove("start", victim, check=True)  # and it starts again
    net_host.cove("stop", victim, bystander, check=True)
    doctor_is_clean(net_host)


@pytest.mark.parametrize("target", ["nspawn", "leader"])
def test_a_killed_nspawn_or_guest_pid1_is_a_crash_the_supervisor_restarts(
    cove_host: Host, busybox_image: Path, target: str
) -> None:
    name = cove_host.name(target[:6])
    cove_host.write(sleeper(name, busybox_image))
    cove_host.cove("start", name, check=True)
    before = supervisor_status(cove_host, name)
    pid = before[target]
    assert isinstance(pid, int)
    os.kill(pid, signal.SIGKILL)  # a process of the container this test started
    wait_for(lambda: status(cove_host, name).get("leader") not in (None, before["leader"]))
    assert status(cove_host, name)["state"] == "up"
    assert "starting it again" in cove_host.log(name)
    cove_host.cove("stop", name, check=True)
    doctor_is_clean(cove_host)


def test_a_runtime_dir_gone_while_down_as_after_a_reboot(
    cove_host: Host, busybox_image: Path
) -> None:
    name = cove_host.name("reboot")
    cove_host.write(sleeper(name, busybox_image))
    cove_host.cove("start", name, check=True)
    cove_host.cove("run", name, "--", "sh", "-c", "echo kept > /data", check=True)
    cove_host.cove("stop", name, check=True)
    shutil.rmtree(cove_host.root / "run")
    cove_host.cove("start", name, check=True)
    assert cove_host.cove("run", name, "--", "cat", "/data").stdout == "kept\n"
    cove_host.cove("stop", name, check=True)
    doctor_is_clean(cove_host)


def test_cove_killed_while_starting_or_stopping(cove_host: Host, busybox_image: Path) -> None:
    name = cove_host.name("interrupted")
    stubborn = 'command = ["/bin/sh", "-c", "trap \'\' TERM; while :; do sleep 1; done"]'
    cove_host.write(f"""
        [containers.{name}]
        image = "{busybox_image}"
        boot = false
        {stubborn}
        timeout-stop-sec = 3
        """)
    env = {**os.environ, "COVE_CONFIG": str(cove_host.config)}
    status_file = cove_host.root / "run" / name / "status.json"

    def supervisor_says(state: str) -> bool:
        try:
            return bool(json.loads(status_file.read_text())["state"] == state)
        except (OSError, ValueError):
            return False

    starting = subprocess.Popen([*COVE, "start", name], env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)  # fmt: skip
    wait_for(lambda: status_file.exists())  # the supervisor runs: kill cove mid-start
    starting.kill()  # the cove this test started
    starting.wait()
    wait_for(lambda: status(cove_host, name)["state"] == "up")
    stopping = subprocess.Popen([*COVE, "stop", name], env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)  # fmt: skip
    wait_for(lambda: supervisor_says("stopping"))  # the guest ignores SIGTERM for 3 s
    stopping.kill()
    stopping.wait()
    wait_for(lambda: status(cove_host, name)["state"] == "down")
    doctor_is_clean(cove_host)
    cove_host.cove("start", name, check=True)
    cove_host.cove("terminate", name, check=True)
    doctor_is_clean(cove_host)


def test_doctor_finds_a_network_left_with_nothing_else(net_host: Host, busybox_image: Path):
    """All a container's processes killed, its runtime dir and cgroup gone (a crash, then a
    careless cleanup): its namespace, host link and rules are still found by name."""
    from cove import cgroups

    assert net_host.netns
    name = net_host.name("bare")
    net_host.write(networked(net_host, "bare", busybox_image, 3))
    net_host.cove("start", name, check=True)
    group = cgroups.Group(f"cove-test-{net_host.tag}/{name}")
    group.kill()  # every process of the container this test started
    group.wait_empty(10)
    group.remove()
    shutil.rmtree(net_host.root / "run" / name)
    found = net_host.cove("doctor").stdout
    kinds = {line.split(":")[0] for line in found.splitlines()}
    assert {"namespace", "link", "nftables"} <= kinds, found
    assert net_host.cove("doctor", "--fix").returncode == 0
    assert not [str(link["ifname"]) for link in ip_json(net_host.netns, "link")
                if str(link["ifname"]).startswith("ve-")]  # fmt: skip
    net_host.cove("start", name, check=True)
    net_host.cove("stop", name, check=True)
    doctor_is_clean(net_host)


def test_doctor_drops_the_hosts_block_of_a_file_that_is_gone(cove_host: Host) -> None:
    cove_host.write("")
    hosts = cove_host.root / "hosts"
    gone = cove_host.root / "removed.toml"
    hosts.write_text(f"127.0.0.1\tlocalhost\n# BEGIN cove {gone} (managed by cove)\n"
                     f"10.88.0.2\tx.containers\n# END cove {gone}\n")  # fmt: skip
    found = cove_host.cove("doctor")
    assert found.returncode == 1 and f"hosts entry: {hosts}: block of {gone}" in found.stdout
    assert cove_host.cove("doctor", "--fix").returncode == 0
    assert hosts.read_text() == "127.0.0.1\tlocalhost\n"
