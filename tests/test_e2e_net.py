"""Container networks for real, built before nspawn starts (direct backend). Every test runs
cove inside a network namespace of its own, so the "host" links, addresses and routes below
are the test's, and all traffic stays between that namespace and its containers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from cove import netnames
from tests.conftest import COVE, Host, ip_json
from tests.guest_units import NETCHECK, as_toml, wanted
from tests.test_e2e_busybox import app

pytestmark = pytest.mark.e2e


def _links(netns: str) -> dict[str, dict[str, object]]:
    return {str(link["ifname"]): link for link in ip_json(netns, "-details", "link", "show")}


def _namespaces() -> set[str]:
    return set(os.listdir("/run/netns")) if os.path.isdir("/run/netns") else set()


def _stand_in(netns: str, name: str) -> None:
    """An interface of the test's host, as a physical one would be: one end of a veth pair
    (this kernel has no dummy driver)."""
    subprocess.run(["ip", "-n", netns, "link", "add", name, "type", "veth", "peer", "name",
                    name + "p"], check=True)  # fmt: skip


def _ping(host: Host, name: str, address: str) -> subprocess.CompletedProcess[str]:
    return host.cove("run", name, "--", "ping", "-c", "1", "-W", "2", address)


def test_private_network_alone_is_loopback_only(net_host: Host, busybox_image: Path) -> None:
    name = net_host.name("lo")
    net_host.write(app(net_host, "lo", busybox_image, "ephemeral = true\nprivate-network = true"))
    assert net_host.netns
    before = set(_links(net_host.netns))
    net_host.cove("start", name, check=True)
    inside = net_host.cove("run", name, "--", "ip", "-o", "link", check=True).stdout
    assert [line.split(":")[1].strip() for line in inside.splitlines()] == ["lo"]
    assert set(_links(net_host.netns)) == before
    assert f"cove-{name}" in _namespaces()
    net_host.cove("stop", name, check=True)
    assert f"cove-{name}" not in _namespaces()


def test_routed_veths_v4_v6_and_prefixes(net_host: Host, busybox_image: Path) -> None:
    assert net_host.netns
    dual, prefixed = net_host.name("dual"), net_host.name("pfx")
    net_host.write(
        app(net_host, "dual", busybox_image, """
        ephemeral = true
        private-network = true
        host-address = "10.77.0.1"
        local-address = "10.77.0.2"
        host-address6 = "fd77::1"
        local-address6 = "fd77::2"
        """)
        + app(net_host, "pfx", busybox_image, """
        ephemeral = true
        private-network = true
        host-address = "10.78.0.1/24"
        local-address = "10.78.0.2/24"
        local-mac-address = "02:00:00:00:78:02"
        """)
    )  # fmt: skip
    net_host.cove("start", dual, prefixed, check=True)
    for name, address in ((dual, "10.77.0.1"), (dual, "fd77::1"), (prefixed, "10.78.0.1")):
        result = _ping(net_host, name, address)
        assert result.returncode == 0, result.stdout + result.stderr
    routes = net_host.cove("run", dual, "--", "ip", "route", check=True).stdout
    assert "default via 10.77.0.1 dev eth0" in routes
    routes6 = net_host.cove("run", dual, "--", "ip", "-6", "route", check=True).stdout
    assert "default via fd77::1 dev eth0" in routes6
    mac = net_host.cove("run", prefixed, "--", "ip", "link", "show", "eth0", check=True)
    assert "link/ether 02:00:00:00:78:02 " in mac.stdout
    host_routes = subprocess.run(["ip", "-n", net_host.netns, "route"], capture_output=True,
                                 text=True, check=True).stdout  # fmt: skip
    assert f"10.77.0.2 dev ve-{dual}" in host_routes
    assert f"10.78.0.0/24 dev ve-{prefixed}" in host_routes
    net_host.cove("stop", dual, prefixed, check=True)
    assert not {f"ve-{dual}", f"ve-{prefixed}"} & set(_links(net_host.netns))
    assert not {f"cove-{dual}", f"cove-{prefixed}"} & _namespaces()


def test_containers_on_a_bridge_reach_each_other_and_the_host(
    net_host: Host, busybox_image: Path
) -> None:
    assert net_host.netns
    bridge = f"br-{net_host.tag}"
    ns = ["ip", "-n", net_host.netns]
    subprocess.run([*ns, "link", "add", bridge, "type", "bridge"], check=True)
    subprocess.run([*ns, "addr", "add", "10.79.0.1/24", "dev", bridge], check=True)
    subprocess.run([*ns, "link", "set", bridge, "up"], check=True)
    one, two, bare = net_host.name("one"), net_host.name("two"), net_host.name("bare")
    bridged = f'ephemeral = true\nprivate-network = true\nhost-bridge = "{bridge}"\n'
    net_host.write(
        app(net_host, "one", busybox_image, bridged + 'local-address = "10.79.0.11/24"\n'
            'host-address = "10.79.0.1"')
        + app(net_host, "two", busybox_image, bridged + 'local-address = "10.79.0.12/24"')
        + app(net_host, "bare", busybox_image, bridged)
    )  # fmt: skip
    net_host.cove("start", one, two, bare, check=True)
    links = _links(net_host.netns)
    for name in (one, two, bare):
        assert links[f"vb-{name}"]["master"] == bridge
    for address in ("10.79.0.12", "10.79.0.1"):
        result = _ping(net_host, one, address)
        assert result.returncode == 0, result.stdout + result.stderr
    assert "default via 10.79.0.1" in net_host.cove("run", one, "--", "ip", "route").stdout
    net_host.cove("stop", one, two, bare, check=True)
    assert not [n for n in _links(net_host.netns) if n.startswith("vb-")]


def test_moved_interfaces_macvlans_and_extra_veths(net_host: Host, busybox_image: Path) -> None:
    assert net_host.netns
    ns = ["ip", "-n", net_host.netns]
    moved, parent = f"dm{net_host.tag}", f"dp{net_host.tag}"
    for link in (moved, parent):
        _stand_in(net_host.netns, link)
    subprocess.run([*ns, "link", "set", parent, "up"], check=True)
    name = net_host.name("many")
    net_host.write(
        app(net_host, "many", busybox_image, f"""
        ephemeral = true
        private-network = true
        interfaces = ["{moved}"]
        macvlans = ["{parent}"]
        [containers.{net_host.name("many")}.extra-veths.x{net_host.tag}]
        host-address = "10.80.0.1"
        local-address = "10.80.0.2"
        local-mac-address = "02:00:00:00:80:02"
        """)
    )  # fmt: skip
    net_host.cove("start", name, check=True)
    inside = net_host.cove("run", name, "--", "ip", "-o", "link", check=True).stdout
    names = {line.split(":")[1].strip().split("@")[0] for line in inside.splitlines()}
    assert {moved, f"mv-{parent}"[:15], f"x{net_host.tag}"} <= names
    assert moved not in _links(net_host.netns)
    mac = net_host.cove("run", name, "--", "ip", "link", "show", f"x{net_host.tag}")
    assert "link/ether 02:00:00:00:80:02 " in mac.stdout
    result = _ping(net_host, name, "10.80.0.1")
    assert result.returncode == 0, result.stdout + result.stderr
    # The extra veth has no default route: only the main one would.
    assert "default" not in net_host.cove("run", name, "--", "ip", "route").stdout
    net_host.cove("stop", name, check=True)
    links = _links(net_host.netns)
    assert moved in links, "a moved interface comes back to the host at stop"
    assert f"x{net_host.tag}" not in links


def test_a_failed_network_setup_leaves_nothing(net_host: Host, busybox_image: Path) -> None:
    assert net_host.netns
    name = net_host.name("nobr")
    net_host.write(
        app(net_host, "nobr", busybox_image, """
        ephemeral = true
        private-network = true
        host-bridge = "no-such-br"
        local-address = "10.81.0.2/24"
        """)
    )  # fmt: skip
    for d in ("state", "run"):
        (net_host.root / d).mkdir()
    before, links = net_host.snapshot(), set(_links(net_host.netns))
    result = net_host.cove("start", name)
    assert result.returncode == 1
    assert f"cove: {name} failed to start: network: host-bridge no-such-br does not exist" in (
        result.stderr
    )
    assert f"cove-{name}" not in _namespaces()
    assert set(_links(net_host.netns)) == links
    assert before.difference(net_host.snapshot()) == {}


def test_joining_an_existing_namespace_leaves_it_alone(net_host: Host, busybox_image: Path) -> None:
    shared = f"shared-{net_host.tag}"
    subprocess.run(["ip", "netns", "add", shared], check=True)
    subprocess.run(["ip", "-n", shared, "link", "add", "marker0", "type", "bridge"], check=True)
    name = net_host.name("join")
    net_host.write(
        app(net_host, "join", busybox_image, f'network-namespace = "/run/netns/{shared}"')
    )
    net_host.cove("start", name, check=True)
    inside = net_host.cove("run", name, "--", "ip", "-o", "link", check=True).stdout
    assert "marker0" in inside
    net_host.cove("stop", name, check=True)
    assert shared in _namespaces()
    assert "marker0" in _links(shared)


def test_long_names_get_a_hashed_host_link(net_host: Host, busybox_image: Path) -> None:
    assert net_host.netns
    name = f"a-forty-character-container-names-{net_host.tag}"
    assert len(name) == 40
    net_host.write(f"""
        [containers.{name}]
        image = "{busybox_image}"
        boot = false
        command = ["/bin/sleep", "1000"]
        ephemeral = true
        private-network = true
        host-address = "10.82.0.1"
        local-address = "10.82.0.2"
        """)
    net_host.cove("start", name, check=True)
    link = netnames.host_link(name, False)
    assert len(link) == 15
    assert link in _links(net_host.netns)
    assert _ping(net_host, name, "10.82.0.1").returncode == 0
    net_host.cove("stop", name, check=True)
    assert link not in _links(net_host.netns)


def _other_host(net_host: Host) -> str:
    """A second machine: a namespace on a veth to the test's host, 10.92.0.2 / fd92::2."""
    assert net_host.netns
    other = f"other-{net_host.tag}"
    link = f"o-{net_host.tag}"
    subprocess.run(["ip", "netns", "add", other], check=True)
    ns, far = ["ip", "-n", net_host.netns], ["ip", "-n", other]
    subprocess.run([*ns, "link", "add", link, "type", "veth", "peer", "name", "eth0", "netns",
                    other], check=True)  # fmt: skip
    for cmd in (
        [*ns, "addr", "add", "10.92.0.1/24", "dev", link],
        [*ns, "addr", "add", "fd92::1/64", "dev", link, "nodad"],
        [*ns, "link", "set", link, "up"],
        [*far, "addr", "add", "10.92.0.2/24", "dev", "eth0"],
        [*far, "addr", "add", "fd92::2/64", "dev", "eth0", "nodad"],
        [*far, "link", "set", "eth0", "up"],
        [*far, "link", "set", "lo", "up"],
    ):
        subprocess.run(cmd, check=True)
    return other


FETCH = (
    "import sys, urllib.request; "
    "print(urllib.request.urlopen(sys.argv[1], timeout=3).read().decode(), end='')"
)


def _python_in(netns: str, code: str, argument: str) -> str:
    """What `code` prints when run inside `netns`, or "failed: …"."""
    argv = ["nsenter", f"--net=/run/netns/{netns}", "--", sys.executable, "-c", code, argument]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=20)
    return result.stdout if result.returncode == 0 else f"failed: {result.stderr[-200:]}"


def _fetch(netns: str, url: str) -> str:
    """An HTTP GET made from inside `netns` (busybox's static wget crashes outside its root)."""
    return _python_in(netns, FETCH, url)


HTTPD = '["/bin/httpd", "-f", "-p", "80", "-h", "/www"]'


def test_forwarded_ports_from_other_hosts_the_host_and_localhost(
    net_host: Host, busybox_image: Path
) -> None:
    assert net_host.netns
    other = _other_host(net_host)
    name = net_host.name("web")
    net_host.write(
        app(net_host, "web", busybox_image, command=HTTPD, extra="""
        ephemeral = true
        files = { "/www/index.html" = "hello from the container\\n" }
        private-network = true
        host-address = "10.91.0.1"
        local-address = "10.91.0.2"
        host-address6 = "fd91::1"
        local-address6 = "fd91::2"
        forward-ports = [{ host-port = 8080, container-port = 80 }]
        """)
    )  # fmt: skip
    net_host.cove("start", name, check=True)
    hello = "hello from the container\n"
    assert _fetch(other, "http://10.92.0.1:8080/") == hello  # another host, v4
    assert _fetch(other, "http://[fd92::1]:8080/") == hello  # another host, v6
    assert _fetch(net_host.netns, "http://10.92.0.1:8080/") == hello  # own v4
    assert _fetch(net_host.netns, "http://[fd92::1]:8080/") == hello  # own v6
    assert _fetch(net_host.netns, "http://127.0.0.1:8080/") == hello
    listed = subprocess.run(["nsenter", f"--net=/run/netns/{net_host.netns}", "nft", "list",
                             "table", "inet", "cove"], capture_output=True, text=True)  # fmt: skip
    assert f"fwd-{name}" in listed.stdout
    net_host.cove("stop", name, check=True)
    gone = subprocess.run(["nsenter", f"--net=/run/netns/{net_host.netns}", "nft", "list",
                           "tables"], capture_output=True, text=True, check=True)  # fmt: skip
    assert "cove" not in gone.stdout, "the table goes with the last container's rules"
    assert _fetch(other, "http://10.92.0.1:8080/").startswith("failed")


def test_a_booted_guest_reaches_the_host_while_it_boots(net_host: Host) -> None:
    assert net_host.netns
    listener = subprocess.Popen(
        ["nsenter", f"--net=/run/netns/{net_host.netns}", "--", sys.executable, "-m",
         "http.server", "9999", "--bind", "0.0.0.0"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        name = net_host.name("boot")
        unit = as_toml(NETCHECK)
        net_host.write(f"""
            [containers.{name}]
            ephemeral = true
            private-network = true
            host-address = "10.83.0.1"
            local-address = "10.83.0.2"
            [containers.{name}.files]
            "/etc/systemd/system/netcheck.service" = "{unit}"
            "/etc/systemd/system/multi-user.target.d/netcheck.conf" = "{wanted("netcheck")}"
            """)
        net_host.cove("start", name, check=True)
        check = net_host.cove("run", name, "--", "systemctl", "is-active", "netcheck.service")
        assert check.stdout == "active\n", net_host.log(name)[-2000:]
        state = net_host.cove("run", name, "--", "systemctl", "is-system-running")
        assert state.stdout == "running\n"
        net_host.cove("stop", name, check=True)
    finally:
        listener.kill()  # the listener this test started, by PID
        listener.wait()


UDP_ECHO = (  # one line: a command argument cannot hold a newline
    "import socket; s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM); "
    "s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0); s.bind(('::', 53)); "
    "[s.sendto(b'pong ' + d, p) for d, p in iter(lambda: s.recvfrom(100), None)]"
)
UDP_ASK = (
    "import socket, sys; family = socket.AF_INET6 if ':' in sys.argv[1] else socket.AF_INET; "
    "s = socket.socket(family, socket.SOCK_DGRAM); s.settimeout(3); "
    "s.sendto(b'ping', (sys.argv[1], 5353)); print(s.recv(100).decode())"
)


def _ask_udp(netns: str, address: str) -> str:
    return _python_in(netns, UDP_ASK, address)


def _until_udp_answers(netns: str, address: str, tries: int = 10) -> str:
    """The guest is ready before its command has bound its socket, and a datagram sent
    before that is lost, not queued: ask again until it answers."""
    for _ in range(tries - 1):
        answer = _ask_udp(netns, address)
        if not answer.startswith("failed"):
            return answer
    return _ask_udp(netns, address)


def test_udp_forwards_v4_and_v6(net_host: Host) -> None:
    assert net_host.netns
    other = _other_host(net_host)
    name = net_host.name("udp")
    net_host.write(f"""
        [containers.{name}]
        boot = false
        command = ["/usr/bin/python3", "-c", '''{UDP_ECHO}''']
        ephemeral = true
        private-network = true
        host-address = "10.94.0.1"
        local-address = "10.94.0.2"
        host-address6 = "fd94::1"
        local-address6 = "fd94::2"
        forward-ports = [{{ protocol = "udp", host-port = 5353, container-port = 53 }}]
        """)
    net_host.cove("start", name, check=True)
    assert _until_udp_answers(other, "10.92.0.1") == "pong ping\n"
    assert _ask_udp(other, "fd92::1") == "pong ping\n"
    assert _ask_udp(net_host.netns, "127.0.0.1") == "pong ping\n"
    net_host.cove("stop", name, check=True)
    assert _ask_udp(other, "10.92.0.1").startswith("failed")


PEER_SERVER = (
    "import socket; s = socket.create_server(('0.0.0.0', 7000)); "
    "[c.sendall(a[0].encode()) or c.close() for c, a in iter(s.accept, None)]"
)
ASK_PEER = (
    "import socket; c = socket.create_connection(('10.92.0.2', 7000), timeout=3); "
    "print(c.recv(100).decode())"
)


def test_nat_masquerades_through_the_named_uplink(net_host: Host) -> None:
    assert net_host.netns
    other = _other_host(net_host)  # the "internet": 10.92.0.2, behind uplink o-TAG
    server = subprocess.Popen(
        ["nsenter", f"--net=/run/netns/{other}", "--", sys.executable, "-c", PEER_SERVER],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        natted, plain = net_host.name("nat"), net_host.name("nonat")
        sleeper = 'boot = false\ncommand = ["/bin/sleep", "infinity"]\nephemeral = true\n'
        net_host.write(
            f"""
            [containers.{natted}]
            {sleeper}
            private-network = true
            host-address = "10.95.0.1"
            local-address = "10.95.0.2"
            nat = true
            [containers.{plain}]
            {sleeper}
            private-network = true
            host-address = "10.96.0.1"
            local-address = "10.96.0.2"
            """,
            host=f'nat-interface = "o-{net_host.tag}"\n',
        )
        net_host.cove("start", natted, plain, check=True)
        seen = net_host.cove("run", natted, "--", "python3", "-c", ASK_PEER)
        assert seen.stdout == "10.92.0.1\n", seen.stderr  # the uplink's address, not 10.95.0.2
        lost = net_host.cove("run", plain, "--", "python3", "-c", ASK_PEER)
        assert lost.returncode != 0, "without nat the other host cannot answer"
        net_host.cove("stop", natted, plain, check=True)
        tables = subprocess.run(["nsenter", f"--net=/run/netns/{net_host.netns}", "nft", "list",
                                 "tables"], capture_output=True, text=True, check=True)  # fmt: skip
        assert "cove" not in tables.stdout
    finally:
        server.kill()  # the server this test started, by PID
        server.wait()


def test_a_moved_interface_survives_a_killed_supervisor(
    net_host: Host, busybox_image: Path
) -> None:
    assert net_host.netns
    moved = f"mv{net_host.tag}"
    _stand_in(net_host.netns, moved)
    name = net_host.name("crash")
    net_host.write(
        app(net_host, "crash", busybox_image, f'private-network = true\ninterfaces = ["{moved}"]')
    )
    net_host.cove("start", name, check=True)
    assert moved not in _links(net_host.netns)
    status = json.loads((net_host.root / "run" / name / "status.json").read_text())
    os.kill(status["supervisor"], signal.SIGKILL)
    # The next start finds the orphan, gives the interface back, and takes it again.
    net_host.cove("start", name, check=True)
    inside = net_host.cove("run", name, "--", "ip", "-o", "link", check=True).stdout
    assert moved in inside
    net_host.cove("stop", name, check=True)
    assert moved in _links(net_host.netns)
    assert f"cove-{name}" not in _namespaces()


def test_an_existing_host_link_is_never_taken_or_deleted(
    net_host: Host, busybox_image: Path
) -> None:
    assert net_host.netns
    mine = f"x{net_host.tag}"
    _stand_in(net_host.netns, mine)
    name = net_host.name("clash")
    net_host.write(
        app(net_host, "clash", busybox_image, f"""
        ephemeral = true
        private-network = true
        [containers.{net_host.name("clash")}.extra-veths.{mine}]
        local-address = "10.97.0.2"
        """)
    )  # fmt: skip
    result = net_host.cove("start", name)
    assert result.returncode == 1
    assert f"network: host interface {mine} already exists" in result.stderr
    assert mine in _links(net_host.netns), "the link that was there stays"
    assert f"cove-{name}" not in _namespaces()


def test_names_resolve_while_declared(net_host: Host, busybox_image: Path) -> None:
    name, gone = net_host.name("named"), net_host.name("gone")
    addresses = 'private-network = true\nlocal-address = "10.98.0.2"\nlocal-address6 = "fd98::2"'
    net_host.write(app(net_host, "named", busybox_image, "ephemeral = true\n" + addresses)
                   + app(net_host, "gone", busybox_image, 'private-network = true\n'
                         'local-address = "10.98.1.2"'))  # fmt: skip
    net_host.cove("start", name, check=True)
    hosts = (net_host.root / "hosts").read_text()
    assert f"10.98.0.2\t{name}.containers" in hosts
    assert f"fd98::2\t{name}.containers" in hosts
    assert f"10.98.1.2\t{gone}.containers" in hosts, "declared, even if not running"
    net_host.write(app(net_host, "named", busybox_image, "ephemeral = true\n" + addresses))
    net_host.cove("stop", name, check=True)
    hosts = (net_host.root / "hosts").read_text()
    assert f"{gone}.containers" not in hosts
    assert f"{name}.containers" in hosts


def test_a_port_or_address_another_files_container_holds_is_refused(
    net_host: Host, busybox_image: Path
) -> None:
    assert net_host.netns
    first = net_host.name("first")
    net_host.write(
        app(net_host, "first", busybox_image, command=HTTPD, extra="""
        ephemeral = true
        files = { "/www/index.html" = "first\\n" }
        private-network = true
        host-address = "10.97.0.1"
        local-address = "10.97.0.2"
        forward-ports = [{ host-port = 8097, container-port = 80 }]
        """)
    )  # fmt: skip
    net_host.cove("start", first, check=True)
    # Another file, its own directories, the same network: cove compares with what runs.
    other = net_host.root / "other"
    other.mkdir()
    base = net_host.config.read_text().split("[containers.")[0]
    for key in ("state", "run", "log", "etc", "hosts"):
        base = base.replace(f'"{net_host.root}/{key}', f'"{other}/{key}')

    def start_other(extra: str) -> subprocess.CompletedProcess[str]:
        (other / "cove.toml").write_text(base + app(net_host, "second", busybox_image,
                                                    command=HTTPD, extra=extra))  # fmt: skip
        return subprocess.run(
            ["nsenter", f"--net=/run/netns/{net_host.netns}", "--", *COVE, "start",
             net_host.name("second")],
            capture_output=True, text=True, timeout=60,
            env={**os.environ, "COVE_CONFIG": str(other / "cove.toml")},
        )  # fmt: skip

    same_port = start_other("""
        private-network = true
        host-address = "10.98.0.1"
        local-address = "10.98.0.2"
        forward-ports = [{ host-port = 8097, container-port = 80 }]
        """)
    assert same_port.returncode == 1
    assert f"host port tcp/8097 is forwarded to container {first} already" in same_port.stderr
    same_address = start_other("""
        private-network = true
        host-address = "10.98.0.1"
        local-address = "10.97.0.2"
        """)
    assert same_address.returncode == 1
    assert "local address 10.97.0.2 is routed to ve-first-" in same_address.stderr
    links = [link["ifname"] for link in ip_json(net_host.netns, "link", "show")]
    assert not [link for link in links if "second" in str(link)], "nothing of it was made"
    assert _fetch(net_host.netns, "http://127.0.0.1:8097/") == "first\n"  # untouched
    net_host.cove("stop", first, check=True)


def test_a_running_container_dropped_from_the_file_is_still_stopped_cleanly(
    net_host: Host, busybox_image: Path
) -> None:
    assert net_host.netns
    name = net_host.name("dropped")
    net_host.write(
        app(net_host, "dropped", busybox_image, extra="""
        ephemeral = true
        private-network = true
        host-address = "10.99.0.1"
        local-address = "10.99.0.2"
        forward-ports = [{ host-port = 8099, container-port = 80 }]
        """)
    )  # fmt: skip
    before = net_host.snapshot()
    net_host.cove("start", name, check=True)
    net_host.write("")  # the file no longer declares it
    status = net_host.cove("status", name)
    assert (status.returncode, status.stdout) == (0, "up\n")
    assert f"{name} is not declared" in status.stderr
    assert json.loads(net_host.cove("status", name, "--json").stdout)["declared"] is False
    assert net_host.cove("stop", name, check=True).stdout == f"{name}: stopped\n"
    links = [str(link["ifname"]) for link in ip_json(net_host.netns, "link", "show")]
    assert not [link for link in links if link.startswith("ve-")]
    assert net_host.cove("status", name).stdout == "gone\n"
    assert net_host.snapshot() == before
    # An ephemeral container leaves only its logs (kept after stop): destroy takes them.
    assert net_host.cove("destroy", name, check=True).stdout == f"{name}: destroyed\n"
    assert net_host.cove("destroy", name).returncode == 3  # now nothing is left
    assert net_host.cove("stop", "never-was").returncode == 3
    assert net_host.cove("stop", "../../etc").returncode == 3
