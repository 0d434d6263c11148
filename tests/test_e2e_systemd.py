"""The systemd backend for real, inside a test host whose PID 1 is systemd (DESIGN §9)."""

from __future__ import annotations

import json
import re
import secrets
import subprocess
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cove.quickunit import FROM_CARD, STOPPED_FROM_CARD
from tests.conftest import CACHE, sleeper
from tests.guest_units import HANG, NETCHECK, as_toml, wanted
from tests.images import busybox_tree
from tests.test_e2e_busybox import TERMINAL_CHECK, on_a_terminal
from tests.testhost import TestHost, tree, wheel

pytestmark = pytest.mark.e2e

CONFIG = "/etc/cove/cove.toml"
BUSYBOX = "/srv/images/busybox"
DEBIAN = "/srv/images/debian"  # the test host's own tree, read-only: a booted guest image


@pytest.fixture(scope="module")
def th() -> Iterator[TestHost]:
    tag = secrets.token_hex(3)
    root = tree(CACHE)
    # The same tree again as a guest image, through a bind mount of its own: nspawn mounts the
    # test host's overlay root at `root` itself, so a bind of `root` would show that overlay.
    view = Path(f"/var/tmp/cove-testhost-view-{tag}")
    view.mkdir()
    subprocess.run(["mount", "--bind", str(root), str(view)], check=True)
    host = TestHost(tag, root, wheel(CACHE), {BUSYBOX: busybox_tree(CACHE), DEBIAN: view})
    try:
        host.boot()
        yield host
    finally:
        host.stop()
        subprocess.run(["umount", str(view)], check=False)
        view.rmdir()


def declare(th: TestHost, containers: str) -> None:
    th.write(CONFIG, textwrap.dedent(containers))


def cove(th: TestHost, *args: str, check: bool = False, timeout: float = 120) -> str:
    result = th.run(["cove", *args], check=check, timeout=timeout)
    return result.stdout + result.stderr


def leftovers(th: TestHost, name: str) -> list[str]:
    """What a stopped container must not leave: runtime dir, mounts, machine, cgroup."""
    found = []
    if th.run(["test", "-e", f"/run/cove/{name}"]).returncode == 0:
        found.append(f"/run/cove/{name}")
    mounts = th.run(["findmnt", "-rn", "-o", "TARGET"]).stdout.splitlines()
    found += [m for m in mounts if f"/cove/{name}" in m]
    if th.run(["machinectl", "show", name]).returncode == 0:
        found.append(f"machine {name}")
    cgroup = f"/sys/fs/cgroup/machine.slice/cove@{name}.service"
    if th.run(["test", "-e", cgroup]).returncode == 0:
        found.append(cgroup)
    return found


def test_a_booted_container_runs_as_a_registered_notify_unit(th: TestHost) -> None:
    declare(
        th,
        """
        [containers.web]
        ephemeral = true
        """,
    )
    assert cove(th, "start", "web", check=True).startswith("web: started (leader PID ")
    assert th.run(["systemctl", "is-active", "cove@web.service"]).stdout == "active\n"
    machines = th.run(["machinectl", "list", "--no-legend"]).stdout
    assert machines.split()[0] == "web"
    running = th.run(["cove", "run", "web", "--", "systemctl", "is-system-running"])
    assert running.stdout == "running\n", th.run(["journalctl", "-u", "cove@web"]).stdout[-3000:]
    status = json.loads(cove(th, "status", "web", "--json", check=True))
    assert status["state"] == "up" and isinstance(status["leader"], int)
    shell = th.run(["machinectl", "shell", "web", "/bin/sh", "-c", "echo inside"])
    assert "inside" in shell.stdout

    verify = th.run(["systemd-analyze", "verify", "/etc/systemd/system/cove@web.service"])
    assert verify.returncode == 0 and verify.stdout + verify.stderr == "", verify.stderr

    assert cove(th, "stop", "web", check=True) == "web: stopped\n"
    assert th.run(["systemctl", "is-active", "cove@web.service"]).stdout == "inactive\n"
    assert leftovers(th, "web") == []
    assert cove(th, "status", "web", check=True) == "down\n"


def test_the_unit_is_rewritten_and_reloaded_only_when_it_changed(th: TestHost) -> None:
    declare(
        th,
        """
        [containers.box]
        image = "/srv/images/busybox"
        boot = false
        command = ["/bin/sh", "-c", "exec sleep 1000"]
        """,
    )
    unit = "/etc/systemd/system/cove@box.service"

    def inode() -> str:
        return th.run(["stat", "-c", "%i %Y", unit], check=True).stdout

    cove(th, "start", "box", check=True)
    first = inode()
    cove(th, "restart", "box", check=True)
    assert inode() == first, "same text: not rewritten"
    declare(
        th,
        """
        [containers.box]
        image = "/srv/images/busybox"
        boot = false
        command = ["/bin/sh", "-c", "exec sleep 1000"]
        timeout-stop-sec = 7
        """,
    )
    cove(th, "restart", "box", check=True)
    assert inode() != first
    assert "TimeoutStopSec=7s" in th.run(["cat", unit]).stdout
    reload = th.run(["systemctl", "show", "cove@box.service", "--property=NeedDaemonReload"])
    assert reload.stdout == "NeedDaemonReload=no\n"
    cove(th, "stop", "box", check=True)
    assert leftovers(th, "box") == []


def test_run_passes_exit_code_and_output_and_a_persistent_root_persists(th: TestHost) -> None:
    declare(
        th,
        f"""
        [containers.cmd]
        image = "{BUSYBOX}"
        boot = false
        command = ["/bin/sh", "-c", "exec sleep 1000"]
        """,
    )
    cove(th, "start", "cmd", check=True)
    result = th.run(["cove", "run", "cmd", "--", "sh", "-c", "echo out; echo err >&2; exit 7"])
    assert (result.returncode, result.stdout, result.stderr) == (7, "out\n", "err\n")
    piped = th.run(["cove", "run", "cmd", "--", "tr", "a-z", "A-Z"], input="hello\n")
    assert piped.stdout == "HELLO\n"
    th.run(["cove", "run", "cmd", "--", "sh", "-c", "echo kept > /root/file"], check=True)
    cove(th, "restart", "cmd", check=True)
    assert th.run(["cove", "run", "cmd", "--", "cat", "/root/file"]).stdout == "kept\n"
    cove(th, "stop", "cmd", check=True)
    assert th.run(["cove", "run", "cmd", "--", "true"]).returncode == 125


def test_a_start_from_its_launch_card_and_what_sends_it_the_normal_way(th: TestHost) -> None:
    declared = """
        [containers.card]
        image = "/srv/images/busybox"
        boot = false
        command = ["/bin/sh", "-c", "exec sleep 1000"]
        """
    declare(th, declared)
    unit = "/etc/systemd/system/cove@card.service"

    def hooks_from_card(line: str = FROM_CARD) -> int:
        journal = th.run(["journalctl", "-u", "cove@card", "-o", "cat"]).stdout
        return journal.count(line)

    cove(th, "start", "card", check=True)  # the normal path: it leaves the card
    assert hooks_from_card() == 0
    cove(th, "stop", "card", check=True)
    started = th.run(["cove", "start", "card"], check=True).stdout
    assert re.fullmatch(r"card: started \(leader PID \d+\)\n", started), started
    assert hooks_from_card() == 1
    assert th.run(["cove", "start", "card"], check=True).stdout.startswith(
        "card: already running (leader PID "
    )
    assert cove(th, "status", "card") == "up\n"
    assert th.run(["test", "-s", "/run/cove/card/started.json"]).returncode == 0
    stopped = hooks_from_card(STOPPED_FROM_CARD)  # the first stop had the card already
    assert th.run(["cove", "stop", "card"], check=True).stdout == "card: stopped\n"
    assert hooks_from_card(STOPPED_FROM_CARD) == stopped + 1
    assert leftovers(th, "card") == []
    assert th.run(["cove", "stop", "card"], check=True).stdout == "card: not running\n"
    # A unit changed by hand: the normal path writes it again.
    th.run(["sh", "-c", f"echo '# by hand' >> {unit}"], check=True)
    cove(th, "start", "card", check=True)
    assert "# by hand" not in th.run(["cat", unit]).stdout
    cove(th, "stop", "card", check=True)
    # A changed file: the normal path in both, and the new unit.
    declare(th, declared + "timeout-stop-sec = 7\n")
    before = hooks_from_card()
    cove(th, "start", "card", check=True)
    assert hooks_from_card() == before
    assert "TimeoutStopSec=7s" in th.run(["cat", unit]).stdout
    cove(th, "stop", "card", check=True)
    assert leftovers(th, "card") == []


def test_twenty_restarts_in_a_row_all_succeed(th: TestHost) -> None:
    declare(
        th,
        """
        [containers.again]
        ephemeral = true
        """,
    )
    cove(th, "start", "again", check=True)
    for i in range(20):
        result = th.run(["cove", "restart", "again"])
        assert result.returncode == 0, f"restart {i}: {result.stderr}"
        assert "already exists" not in result.stderr
    assert th.run(["cove", "run", "again", "--", "systemctl", "is-system-running"]).stdout in (
        "running\n",
        "starting\n",
    )
    cove(th, "stop", "again", check=True)
    assert leftovers(th, "again") == []


def test_a_command_ignoring_sigterm_is_gone_after_the_stop_timeout(th: TestHost) -> None:
    declare(
        th,
        f"""
        [containers.stubborn]
        image = "{BUSYBOX}"
        boot = false
        command = ["/bin/sh", "-c", "trap '' TERM; while :; do sleep 1; done"]
        timeout-stop-sec = 2
        """,
    )
    cove(th, "start", "stubborn", check=True)
    stopped = th.run(["cove", "stop", "stubborn"], timeout=30)
    assert stopped.returncode == 0, stopped.stderr
    assert leftovers(th, "stubborn") == []
    assert cove(th, "status", "stubborn", check=True) == "down\n"


def test_an_ephemeral_guest_rebooting_itself_comes_back_empty(th: TestHost) -> None:
    declare(
        th,
        """
        [containers.phoenix]
        ephemeral = true
        """,
    )
    cove(th, "start", "phoenix", check=True)
    th.run(["cove", "run", "phoenix", "--", "sh", "-c", "echo x > /root/mark"], check=True)
    before = json.loads(cove(th, "status", "phoenix", "--json", check=True))["leader"]
    th.run(["cove", "run", "phoenix", "--", "systemctl", "reboot"])
    # Back when machined has a new leader and the guest is up again.
    # The guest itself must answer (a failing `cove run` while the old boot goes down also
    # exits 1), and the unit must be settled again, not still deactivating.
    probe = "test -e /root/mark && echo old || echo fresh"
    state = th.wait_until(
        ["sh", "-c", f"cove run phoenix -- sh -c '{probe}' 2>&1; systemctl is-active cove@phoenix"],
        "fresh\nactive\n",
        timeout=90,
    )
    assert state == "fresh\nactive\n", th.run(
        ["journalctl", "-u", "cove@phoenix", "-n", "40"]
    ).stdout
    after = json.loads(cove(th, "status", "phoenix", "--json", check=True))["leader"]
    assert after != before  # a new boot of the same unit
    cove(th, "stop", "phoenix", check=True)
    assert leftovers(th, "phoenix") == []


def test_a_failed_start_shows_the_guest_output_and_leaves_nothing(th: TestHost) -> None:
    declare(
        th,
        f"""
        [containers.broken]
        image = "{BUSYBOX}"
        boot = false
        command = ["/bin/sh", "-c", "echo about to fail; exit 3"]
        """,
    )
    result = th.run(["cove", "start", "broken"])
    # A command container is ready once its command started: the failure comes after.
    if result.returncode == 0:
        th.wait_until(["systemctl", "is-active", "cove@broken.service"], "failed\n")
        assert "about to fail" in th.run(["journalctl", "-u", "cove@broken"]).stdout
    else:
        assert "about to fail" in result.stderr
    cove(th, "stop", "broken")
    assert leftovers(th, "broken") == []


def test_destroy_removes_the_unit_too(th: TestHost) -> None:
    declare(
        th,
        """
        [containers.gone]
        ephemeral = true
        """,
    )
    cove(th, "start", "gone", check=True)
    declare(th, "")  # dropped from the file: destroy may take it
    cove(th, "destroy", "gone", check=True)
    assert th.run(["test", "-e", "/etc/systemd/system/cove@gone.service"]).returncode == 1
    assert leftovers(th, "gone") == []
    assert th.run(["test", "-e", "/var/lib/cove/containers/gone"]).returncode == 1


def test_a_crashing_command_is_restarted_by_systemd_within_its_start_limit(
    th: TestHost,
) -> None:
    th.run(["mkdir", "-p", "/srv/shared-crash"], check=True)
    declare(
        th,
        f"""
        [containers.crash]
        image = "{BUSYBOX}"
        boot = false
        command = ["/bin/sh", "-c", "echo run >> /shared/runs; sleep 0.2; exit 1"]
        [containers.crash.bind-mounts."/shared"]
        host-path = "/srv/shared-crash"
        is-read-only = false
        """,
    )
    th.run(["cove", "start", "crash"])
    state = th.wait_until(["systemctl", "is-active", "cove@crash.service"], "failed\n", 30)
    assert state == "failed\n"
    assert th.run(["cat", "/srv/shared-crash/runs"]).stdout == "run\n" * 5
    assert cove(th, "status", "crash") == "failed\n"
    cove(th, "stop", "crash")  # clears the failed state
    assert cove(th, "status", "crash") == "down\n"
    assert leftovers(th, "crash") == []


def test_a_guest_powering_off_stays_stopped_and_terminate_kills_at_once(th: TestHost) -> None:
    declare(
        th,
        """
        [containers.quiet]
        ephemeral = true
        [containers.killed]
        ephemeral = true
        timeout-stop-sec = 60
        """,
    )
    cove(th, "start", "quiet", "killed", check=True)
    th.run(["cove", "run", "quiet", "--", "systemctl", "poweroff"])
    state = th.wait_until(["systemctl", "is-active", "cove@quiet.service"], "inactive\n", 30)
    assert state == "inactive\n"
    assert leftovers(th, "quiet") == []
    terminated = th.run(["cove", "terminate", "killed"], timeout=20)
    assert terminated.stdout == "killed: terminated\n", terminated.stderr
    assert th.run(["systemctl", "is-active", "cove@killed.service"]).stdout == "inactive\n"
    assert leftovers(th, "killed") == []


def test_a_persistent_booted_guest_links_its_journal(th: TestHost) -> None:
    declare(
        th,
        """
        [containers.journaled]
        """,
    )
    cove(th, "start", "journaled", check=True)
    th.run(["cove", "run", "journaled", "--", "logger", "-t", "probe", "hello-from-inside"])
    found = th.wait_until(
        ["sh", "-c", "journalctl -M journaled -t probe -o cat --no-pager | tail -1"],
        "hello-from-inside\n",
    )
    assert found == "hello-from-inside\n"
    declare(th, "")
    cove(th, "destroy", "journaled", check=True)
    assert leftovers(th, "journaled") == []


def test_logs_of_an_ephemeral_container_are_kept_in_the_journal(th: TestHost) -> None:
    declare(
        th,
        f"""
        [containers.chatty]
        image = "{BUSYBOX}"
        boot = false
        ephemeral = true
        command = ["/bin/sh", "-c", "echo said-one; echo said-two; exec sleep 1000"]
        """,
    )
    cove(th, "start", "chatty", check=True)
    th.wait_until(["sh", "-c", "cove logs chatty | grep -c said-"], "2\n")
    cove(th, "stop", "chatty", check=True)
    logs = th.run(["cove", "logs", "chatty"], check=True).stdout
    assert "said-one\nsaid-two\n" in logs
    last = th.run(["cove", "logs", "chatty", "-n", "1"], check=True).stdout
    assert last.count("\n") == 1


def test_auto_start_containers_are_enabled_and_come_back_with_machines_target(
    th: TestHost,
) -> None:
    declare(
        th,
        f"""
        [containers.early]
        image = "{BUSYBOX}"
        boot = false
        auto-start = true
        command = ["/bin/sh", "-c", "exec sleep 1000"]
        [containers.late]
        image = "{BUSYBOX}"
        boot = false
        command = ["/bin/sh", "-c", "exec sleep 1000"]
        """,
    )
    assert cove(th, "autostart", check=True).startswith("early: started")
    assert th.run(["systemctl", "is-enabled", "cove@early.service"]).stdout == "enabled\n"
    assert cove(th, "status", "late") == "down\n"
    # What a boot does: machines.target (wanted by multi-user.target) starts what it wants.
    th.run(["systemctl", "stop", "machines.target"], check=True)
    assert th.wait_until(["cove", "status", "early"], "down\n") == "down\n"  # PartOf=
    th.run(["systemctl", "start", "machines.target"], check=True)
    assert th.wait_until(["cove", "status", "early"], "up\n") == "up\n"
    assert cove(th, "status", "late") == "down\n"
    declare(th, "")
    cove(th, "destroy", "early", check=True)
    assert th.run(["systemctl", "is-enabled", "cove@early.service"]).returncode != 0
    assert leftovers(th, "early") == []


def test_a_guest_never_ready_fails_after_the_start_timeout_and_is_not_retried(
    th: TestHost,
) -> None:
    declare(
        th,
        f"""
        [containers.mute]
        image = "{BUSYBOX}"
        boot = true
        timeout-start-sec = 3
        """,
    )
    result = th.run(["cove", "start", "mute"], timeout=60)
    assert result.returncode == 1
    assert "mute failed to start" in result.stderr
    assert "hint: journalctl -u cove@mute.service" in result.stderr
    time.sleep(1)  # Restart= would have begun by now
    assert th.run(["systemctl", "is-active", "cove@mute.service"]).stdout == "inactive\n"
    assert leftovers(th, "mute") == []


def test_thirty_booted_containers_at_once_then_a_host_shutdown_that_does_not_hang() -> None:
    """In a test host of its own: 30 booted guests started at once all get ready; then the
    host shuts down with five of them running, within their stop timeout."""
    th = TestHost(secrets.token_hex(3), tree(CACHE), wheel(CACHE), {})
    limit = Path("/proc/sys/fs/inotify/max_user_instances")  # see test_e2e_host's thirty
    saved = limit.read_text()
    limit.write_text("1024\n")
    try:
        th.boot()
        names = [f"m{i}" for i in range(30)]
        declare(th, "".join(f"[containers.{n}]\nephemeral = true\ntimeout-stop-sec = 10\n"
                            for n in names))  # fmt: skip
        script = "for n in $NAMES; do cove start $n > /tmp/start-$n 2>&1 & done; wait"
        th.run(["env", f"NAMES={' '.join(names)}", "sh", "-c", script], timeout=300)
        active = th.run(["sh", "-c", "systemctl is-active 'cove@m*.service' | sort | uniq -c"])
        assert active.stdout.split() == ["30", "active"], th.run(["tail", "/tmp/start-m0"]).stdout
        th.run(["sh", "-c", f"for n in {' '.join(names[5:])}; do cove stop $n; done"], check=True)
        # The guests' stop timeout is 10 s: a host that hangs on them is killed at 30.
        assert th.stop(timeout=30), "the test host had to be killed"
    finally:
        th.stop()
        limit.write_text(saved)


def test_login_is_machinectl_login(th: TestHost) -> None:
    declare(
        th,
        """
        [containers.getty]
        ephemeral = true
        """,
    )
    cove(th, "start", "getty", check=True)
    prompt = th.run(["timeout", "6", "script", "-qec", "cove login getty", "/dev/null"])
    assert "Connected to machine getty" in prompt.stdout
    assert "getty login:" in prompt.stdout
    cove(th, "stop", "getty", check=True)


FETCH = (
    "import sys, urllib.request; "
    "print(urllib.request.urlopen(sys.argv[1], timeout=3).read().decode(), end='')"
)


def test_a_routed_network_with_forwards_and_a_bridge_on_the_systemd_backend(
    th: TestHost,
) -> None:
    """The network scenarios of the direct backend's tests, on units (the test host's network
    is private to it: everything here stays inside)."""
    th.run(["ip", "link", "add", "br-th", "type", "bridge"], check=True)
    th.run(["ip", "addr", "add", "10.95.0.1/24", "dev", "br-th"], check=True)
    th.run(["ip", "link", "set", "br-th", "up"], check=True)
    httpd = '["/bin/httpd", "-f", "-p", "80", "-h", "/www"]'
    declare(
        th,
        f"""
        [containers.routed]
        image = "{BUSYBOX}"
        boot = false
        ephemeral = true
        command = {httpd}
        files = {{ "/www/index.html" = "routed\\n" }}
        private-network = true
        host-address = "10.96.0.1"
        local-address = "10.96.0.2"
        forward-ports = [{{ host-port = 8080, container-port = 80 }}]
        [containers.bridged]
        image = "{BUSYBOX}"
        boot = false
        ephemeral = true
        command = {httpd}
        files = {{ "/www/index.html" = "bridged\\n" }}
        private-network = true
        host-bridge = "br-th"
        local-address = "10.95.0.2/24"
        host-address = "10.95.0.1"
        """,
    )
    cove(th, "start", "routed", "bridged", check=True)

    def fetch(url: str) -> str:
        return th.run(["python3", "-c", FETCH, url]).stdout

    assert fetch("http://10.96.0.2/") == "routed\n"  # the veth, straight
    assert fetch("http://127.0.0.1:8080/") == "routed\n"  # the forward, from the host
    assert fetch("http://10.95.0.2/") == "bridged\n"  # over the bridge
    between = th.run(["cove", "run", "bridged", "--", "wget", "-qO-", "http://10.96.0.2/"])
    assert between.stdout == "routed\n"  # container to container, routed by the host
    assert "fwd-routed" in th.run(["nft", "list", "table", "inet", "cove"]).stdout
    cove(th, "stop", "routed", "bridged", check=True)
    links = th.run(["ip", "-o", "link"]).stdout
    assert "ve-routed" not in links and "vb-bridged" not in links
    assert th.run(["ip", "netns", "list"]).stdout == ""
    assert "cove" not in th.run(["nft", "list", "tables"]).stdout
    assert leftovers(th, "routed") == [] and leftovers(th, "bridged") == []
    th.run(["ip", "link", "delete", "br-th"], check=True)


FAR_SERVER = (
    "import socket; s = socket.create_server(('0.0.0.0', 7000)); "
    "[c.sendall(a[0].encode()) or c.close() for c, a in iter(s.accept, None)]"
)
ASK_FAR = (
    "import socket; c = socket.create_connection(('10.97.0.2', 7000), timeout=3); "
    "print(c.recv(100).decode())"
)


def test_v6_moved_interfaces_macvlans_extra_veths_and_nat_on_the_systemd_backend(
    th: TestHost,
) -> None:
    """The rest of the direct backend's network scenarios, on units: an IPv6-only veth with
    a forward, a moved interface and a macvlan (veth ends stand in for physical ones), an
    extra veth, and NAT through an uplink to a namespace playing the outside world."""
    setup = [
        "ip link add th-moved type veth peer name th-movedp",
        "ip link add th-parent type veth peer name th-parentp",
        "ip link set th-parent up",
        "ip netns add far",
        "ip link add th-up type veth peer name eth0 netns far",
        "ip addr add 10.97.0.1/24 dev th-up",
        "ip link set th-up up",
        "ip -n far addr add 10.97.0.2/24 dev eth0",
        "ip -n far link set eth0 up",
        "ip -n far link set lo up",
    ]
    for line in setup:
        th.run(line.split(), check=True)
    th.run(["systemd-run", "--unit=far-server", "ip", "netns", "exec", "far", "python3", "-c",
            FAR_SERVER], check=True)  # fmt: skip
    try:
        httpd = '["/bin/httpd", "-f", "-p", "80", "-h", "/www"]'
        th.write(
            CONFIG,
            '[host]\nnat-interface = "th-up"\n'
            + textwrap.dedent(f"""
            [containers.six]
            image = "{BUSYBOX}"
            boot = false
            ephemeral = true
            command = {httpd}
            files = {{ "/www/index.html" = "six\\n" }}
            private-network = true
            host-address6 = "fd98::1"
            local-address6 = "fd98::2"
            forward-ports = [{{ host-port = 8086, container-port = 80 }}]
            interfaces = ["th-moved"]
            macvlans = ["th-parent"]
            [containers.six.extra-veths.x-six]
            host-address = "10.99.0.1"
            local-address = "10.99.0.2"
            local-mac-address = "02:00:00:00:99:02"
            [containers.natted]
            boot = false
            ephemeral = true
            command = ["/bin/sleep", "infinity"]
            private-network = true
            host-address = "10.98.0.1"
            local-address = "10.98.0.2"
            nat = true
            """),
        )
        cove(th, "start", "six", "natted", check=True)
        inside = th.run(["cove", "run", "six", "--", "ip", "-o", "link"], check=True).stdout
        names = {line.split(":")[1].strip().split("@")[0] for line in inside.splitlines()}
        assert {"th-moved", "mv-th-parent", "x-six"} <= names
        mac = th.run(["cove", "run", "six", "--", "ip", "link", "show", "x-six"]).stdout
        assert "link/ether 02:00:00:00:99:02 " in mac
        fetch = ["python3", "-c", FETCH]
        assert th.run([*fetch, "http://[fd98::2]/"]).stdout == "six\n"  # the v6 veth
        assert th.run([*fetch, "http://[fd98::1]:8086/"]).stdout == "six\n"  # the v6 forward
        assert th.run([*fetch, "http://10.99.0.2/"]).stdout == "six\n"  # the extra veth
        seen = th.run(["cove", "run", "natted", "--", "python3", "-c", ASK_FAR])
        assert seen.stdout == "10.97.0.1\n", seen.stderr  # masqueraded behind the uplink
        cove(th, "stop", "six", "natted", check=True)
        links = th.run(["ip", "-o", "link"]).stdout
        assert "th-moved:" in links, "a moved interface comes back to the host at stop"
        assert "x-six" not in links and "ve-six" not in links and "ve-natted" not in links
        namespaces = th.run(["ip", "netns", "list"]).stdout.splitlines()
        assert [line.split()[0] for line in namespaces] == ["far"]
        assert "cove" not in th.run(["nft", "list", "tables"]).stdout
        assert leftovers(th, "six") == [] and leftovers(th, "natted") == []
    finally:
        th.run(["systemctl", "stop", "far-server"])
        for line in ("ip netns delete far", "ip link delete th-moved", "ip link delete th-parent"):
            th.run(line.split())


def test_a_booted_guest_reaches_the_host_while_it_boots_on_the_systemd_backend(
    th: TestHost,
) -> None:
    """The unit builds the network in ExecStartPre=, before nspawn: a guest service ordered
    before multi-user.target that needs the host address succeeds."""
    th.run(["systemd-run", "--unit=boot-listener", "python3", "-m", "http.server", "9999",
            "--bind", "0.0.0.0"], check=True)  # fmt: skip
    try:
        unit = as_toml(NETCHECK)
        declare(
            th,
            f"""
            [containers.netboot]
            ephemeral = true
            private-network = true
            host-address = "10.83.0.1"
            local-address = "10.83.0.2"
            [containers.netboot.files]
            "/etc/systemd/system/netcheck.service" = "{unit}"
            "/etc/systemd/system/multi-user.target.d/netcheck.conf" = "{wanted("netcheck")}"
            """,
        )
        cove(th, "start", "netboot", check=True)
        check = th.run(["cove", "run", "netboot", "--", "systemctl", "is-active", "netcheck"])
        assert check.stdout == "active\n", cove(th, "logs", "netboot", "-n", "40")
        state = th.run(["cove", "run", "netboot", "--", "systemctl", "is-system-running"])
        assert state.stdout == "running\n"
        cove(th, "stop", "netboot", check=True)
        assert leftovers(th, "netboot") == []
    finally:
        th.run(["systemctl", "stop", "boot-listener"])


def test_a_running_container_dropped_from_the_file_is_stopped_and_cleaned_up(
    th: TestHost,
) -> None:
    declare(
        th,
        """
        [containers.dropped]
        ephemeral = true
        private-network = true
        host-address = "10.94.0.1"
        local-address = "10.94.0.2"
        """,
    )
    cove(th, "start", "dropped", check=True)
    declare(th, "")
    assert th.run(["cove", "status", "dropped"]).stdout == "up\n"
    assert cove(th, "stop", "dropped", check=True) == "dropped: stopped\n"
    assert th.run(["test", "-e", "/etc/systemd/system/cove@dropped.service"]).returncode == 1
    assert "ve-dropped" not in th.run(["ip", "-o", "link"]).stdout
    assert th.run(["ip", "netns", "list"]).stdout == ""
    assert leftovers(th, "dropped") == []


def test_run_works_on_a_terminal_on_the_systemd_backend(th: TestHost) -> None:
    declare(
        th,
        f"""
        [containers.tty]
        image = "{BUSYBOX}"
        boot = false
        ephemeral = true
        command = ["/bin/sh", "-c", "exec sleep 1000"]
        """,
    )
    cove(th, "start", "tty", check=True)
    argv = on_a_terminal(["cove", "run", "tty", "--", "sh", "-c", TERMINAL_CHECK])
    typed = th.run(argv, input="hello\n")
    cove(th, "stop", "tty", check=True)
    assert typed.returncode == 3, typed.stdout + typed.stderr
    out = typed.stdout.replace("\r", "")
    assert "33 101\n" in out and "got hello\n" in out


def test_auto_start_containers_come_back_when_the_host_reboots() -> None:
    """A host of its own whose root outlives a reboot, as a real one's does."""
    host = TestHost(
        secrets.token_hex(3), tree(CACHE), wheel(CACHE), {BUSYBOX: busybox_tree(CACHE)},
        persistent=True,
    )  # fmt: skip
    try:
        host.boot()
        declare(host, sleeper("early", BUSYBOX, "auto-start = true\n") + sleeper("late", BUSYBOX))
        assert cove(host, "autostart", check=True).startswith("early: started")
        boot_id = ["cat", "/proc/sys/kernel/random/boot_id"]
        before = host.run(["cove", "run", "early", "--", *boot_id], check=True).stdout
        host.reboot()
        assert host.wait_until(["cove", "status", "early"], "up\n") == "up\n"
        assert cove(host, "status", "late") == "down\n"
        after = host.run(["cove", "run", "early", "--", *boot_id], check=True).stdout
        assert after != before  # the container booted again, it did not merely survive
    finally:
        assert host.stop(), "the test host did not power off in time"


def test_a_booted_guest_that_never_powers_off_is_gone_after_the_stop_timeout(
    th: TestHost,
) -> None:
    unit = as_toml(HANG)
    declare(
        th,
        f"""
        [containers.hangs]
        ephemeral = true
        timeout-stop-sec = 3
        [containers.hangs.files]
        "/etc/systemd/system/hang.service" = "{unit}"
        "/etc/systemd/system/multi-user.target.d/hang.conf" = "{wanted("hang")}"
        """,
    )
    cove(th, "start", "hangs", check=True)
    active = th.run(["cove", "run", "hangs", "--", "systemctl", "is-active", "hang"]).stdout
    assert active == "active\n"
    stopped = th.run(["cove", "stop", "hangs"], timeout=60)
    assert stopped.returncode == 0, stopped.stderr
    journal = th.run(["journalctl", "-u", "cove@hangs.service", "--no-pager"]).stdout
    assert "timed out. Killing." in journal, journal[-2000:]
    assert leftovers(th, "hangs") == []
    assert cove(th, "status", "hangs", check=True) == "down\n"


def test_apply_on_the_systemd_backend_creates_updates_in_place_and_removes(
    th: TestHost,
) -> None:
    sleeper = 'boot = false\ncommand = ["/bin/sh", "-c", "exec sleep 1000"]'
    web = f"""
        [containers.aweb]
        ephemeral = true
        auto-start = true
        [containers.aweb.files]
        "/etc/motd" = "MOTD\\n"
        [containers.ajob]
        image = "{BUSYBOX}"
        {sleeper}
        """
    declare(th, web.replace("MOTD", "one"))
    done = cove(th, "apply", check=True)
    assert "aweb: started" in done and "ajob: created" in done
    assert th.run(["systemctl", "is-enabled", "cove@aweb.service"]).stdout == "enabled\n"
    assert th.run(["test", "-f", "/etc/systemd/system/cove@ajob.service"]).returncode == 0
    boot_id = ["cat", "/proc/sys/kernel/random/boot_id"]
    before = th.run(["cove", "run", "aweb", "--", *boot_id], check=True).stdout
    assert cove(th, "apply", check=True) == "nothing to do: the host is as the file says\n"

    declare(th, web.replace("MOTD", "two"))
    assert "aweb  update  files" in cove(th, "plan", check=True)
    assert cove(th, "apply", check=True) == "aweb: updated (files)\n"
    assert th.run(["cove", "run", "aweb", "--", "cat", "/etc/motd"]).stdout == "two\n"
    assert th.run(["cove", "run", "aweb", "--", *boot_id]).stdout == before

    declare(th, f'[containers.ajob]\nimage = "{BUSYBOX}"\n{sleeper}\n')
    assert cove(th, "apply", check=True) == "aweb: stopped\naweb: removed\n"
    assert th.run(["test", "-e", "/etc/systemd/system/cove@aweb.service"]).returncode != 0
    assert leftovers(th, "aweb") == []
    assert (
        cove(th, "plan", check=True)
        == "NAME  ACTION  KEYS  REASON\najob  -       -     up to date\n"
    )
    declare(th, "")
    assert cove(th, "apply", "--prune", check=True) == "ajob: removed\najob: data removed\n"


def _main_pid(th: TestHost, name: str) -> int:
    out = th.run(["systemctl", "show", f"cove@{name}.service", "--property=MainPID",
                  "--value"], check=True).stdout  # fmt: skip
    return int(out)


@pytest.mark.parametrize("target", ["nspawn", "leader"])
def test_a_killed_nspawn_or_guest_pid1_is_restarted_by_systemd_and_leaves_nothing(
    th: TestHost, target: str
) -> None:
    name = f"kill{target}"
    declare(th, f"""
        [containers.{name}]
        image = "{BUSYBOX}"
        boot = false
        ephemeral = true
        command = ["/bin/sh", "-c", "exec sleep 1000"]
        private-network = true
        host-address = "10.92.{len(target)}.1"
        local-address = "10.92.{len(target)}.2"
        """)  # fmt: skip
    cove(th, "start", name, check=True)
    leader = json.loads(cove(th, "status", name, "--json", check=True))["leader"]
    victim = _main_pid(th, name) if target == "nspawn" else leader
    th.run(["kill", "-KILL", str(victim)], check=True)  # a process this test's container runs
    deadline = time.monotonic() + 60
    while True:  # systemd starts it again (Restart=on-failure): a new leader, up
        info = json.loads(th.run(["cove", "status", name, "--json"]).stdout)
        if info["state"] == "up" and info["leader"] not in (None, leader):
            break
        assert time.monotonic() < deadline, (
            info,
            th.run(["journalctl", "-u", f"cove@{name}", "-n", "30"]).stdout,
        )
        time.sleep(0.2)
    cove(th, "stop", name, check=True)
    assert leftovers(th, name) == []
    assert name not in th.run(["cove", "doctor"]).stdout  # others' units may be there


def test_cove_killed_mid_start_and_the_runtime_dir_gone_on_the_systemd_backend(
    th: TestHost,
) -> None:
    declare(th, sleeper("midstart", BUSYBOX))  # fmt: skip
    # `cove start` killed while it waits: the unit's start goes on without it.
    th.run(["sh", "-c", "cove start midstart & pid=$!; until systemctl is-active --quiet "
            "cove@midstart.service || systemctl is-active cove@midstart.service | grep -q "
            "activating; do sleep 0.01; done; kill -KILL $pid; wait"], timeout=60)  # fmt: skip
    assert th.wait_until(["cove", "status", "midstart"], "up\n") == "up\n"
    cove(th, "stop", "midstart", check=True)
    th.run(["rm", "-rf", "/run/cove"], check=True)  # as a reboot leaves it
    cove(th, "start", "midstart", check=True)
    cove(th, "stop", "midstart", check=True)
    assert leftovers(th, "midstart") == []
    assert "midstart" not in th.run(["cove", "doctor"]).stdout  # others' units may be there
    declare(th, "")
    cove(th, "apply", "--prune", check=True)


def test_cove_killed_mid_stop_and_mid_apply_on_the_systemd_backend(th: TestHost) -> None:
    slow = f"""
        [containers.midstop]
        image = "{BUSYBOX}"
        boot = false
        command = ["/bin/sh", "-c", "trap '' TERM; while :; do sleep 1; done"]
        timeout-stop-sec = 3
        """
    declare(th, slow)
    cove(th, "start", "midstop", check=True)
    # `cove stop` killed while systemd waits out the guest's stop timeout: the stop goes on.
    th.run(["sh", "-c", "cove stop midstop & pid=$!; until systemctl is-active "
            "cove@midstop.service | grep -q deactivating; do sleep 0.05; done; "
            "kill -KILL $pid; wait"], timeout=60)  # fmt: skip
    assert th.wait_until(["cove", "status", "midstop"], "down\n") == "down\n"
    assert leftovers(th, "midstop") == []
    # `cove apply` killed right after its first action; the next one finishes the plan.
    declare(th, slow.replace("timeout-stop-sec = 3", "timeout-stop-sec = 3\nauto-start = true")
            + f'[containers.midapply]\nimage = "{BUSYBOX}"\nboot = false\n'
            'command = ["/bin/sh", "-c", "exec sleep 1000"]\nauto-start = true\n')  # fmt: skip
    killed = th.run(["env", "COVE_TEST_FAULT=create", "cove", "apply"])
    assert killed.returncode == -9 or killed.returncode == 137, killed.stdout + killed.stderr
    cove(th, "apply", check=True)
    assert '"actions": []' in cove(th, "plan", "--json", check=True)
    assert cove(th, "status", "midapply") == "up\n" and cove(th, "status", "midstop") == "up\n"
    declare(th, "")
    cove(th, "apply", "--prune", check=True)
    assert leftovers(th, "midstop") == [] and leftovers(th, "midapply") == []


def test_an_ephemeral_root_filled_up_is_the_guests_enospc_on_the_systemd_backend(
    th: TestHost,
) -> None:
    declare(th, f"""
        [containers.full]
        image = "{BUSYBOX}"
        boot = false
        ephemeral = true
        ephemeral-size = "8M"
        command = ["/bin/sh", "-c", "exec sleep 1000"]
        """)  # fmt: skip
    cove(th, "start", "full", check=True)
    fill = th.run(["cove", "run", "full", "--", "dd", "if=/dev/zero", "of=/root/big", "bs=1M",
                   "count=64"])  # fmt: skip
    assert fill.returncode != 0 and "No space left on device" in fill.stderr
    assert th.run(["cove", "run", "full", "--", "rm", "/root/big"]).returncode == 0
    assert cove(th, "status", "full") == "up\n"
    cove(th, "stop", "full", check=True)
    assert leftovers(th, "full") == []
    free = th.run(["df", "--output=avail", "/var/lib/cove"]).stdout.split()[-1]
    assert int(free) > 0  # the host's side never filled


def test_private_users_pick_with_a_writable_bind_on_the_systemd_backend(th: TestHost) -> None:
    th.run(["mkdir", "-p", "/var/lib/cove/shared"], check=True)  # tmpfs: ID-mappable
    declare(
        th,
        f"""
        [containers.shifted]
        image = "{BUSYBOX}"
        boot = false
        command = ["/bin/sh", "-c", "exec sleep 1000"]
        private-users = "pick"
        [containers.shifted.bind-mounts."/shared"]
        host-path = "/var/lib/cove/shared"
        is-read-only = false
        """,
    )
    cove(th, "start", "shifted", check=True)
    inside, base, count = th.run(["cove", "run", "shifted", "--", "cat", "/proc/self/uid_map"],
                                 check=True).stdout.split()  # fmt: skip
    assert (inside, count) == ("0", "65536") and int(base) >= 0x80000
    th.run(["cove", "run", "shifted", "--", "touch", "/shared/made", "/made"], check=True)
    assert th.run(["stat", "-c", "%u", "/var/lib/cove/shared/made"]).stdout == "0\n"
    upper = "/var/lib/cove/containers/shifted/upper/made"
    assert th.run(["stat", "-c", "%u", upper]).stdout == f"{base}\n"
    cove(th, "stop", "shifted", check=True)
    assert leftovers(th, "shifted") == []
    assert th.run(["test", "-e", f"/run/systemd/nspawn-uid/{base}"]).returncode == 1


def test_a_login_session_through_cove_run_in_a_shifted_guest_on_the_systemd_backend(
    th: TestHost,
) -> None:
    declare(
        th,
        f"""
        [containers.shiftboot]
        image = "{DEBIAN}"
        ephemeral = true
        private-users = "pick"
        """,
    )
    cove(th, "start", "shiftboot", check=True)
    inside, base, _ = th.run(["cove", "run", "shiftboot", "--", "cat", "/proc/self/uid_map"],
                             check=True).stdout.split()  # fmt: skip
    assert inside == "0" and int(base) >= 0x80000
    logind = th.run(["cove", "run", "shiftboot", "--", "systemctl", "is-active",
                     "systemd-logind"]).stdout  # fmt: skip
    assert logind == "active\n"  # else `su` would open no session and prove nothing
    th.run(["cove", "run", "shiftboot", "--", "su", "-s", "/bin/sh", "nobody", "-c", "true"],
           check=True)  # fmt: skip
    failed = th.run(["cove", "run", "shiftboot", "--", "systemctl", "--failed", "--no-legend",
                     "--plain"]).stdout  # fmt: skip
    assert "session-" not in failed, failed
    cove(th, "stop", "shiftboot", check=True)
    assert leftovers(th, "shiftboot") == []
