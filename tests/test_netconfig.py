"""Network keys: parsing, the rules between keys and between containers, and host names."""

from __future__ import annotations

import pytest

from cove import netnames
from cove.model import Backend, PortForward
from cove.netsettings import NETWORK_SETTINGS
from cove.render import HostFacts, render
from tests.test_config import FILE, errors, parse


def test_network_keys_parse() -> None:
    c = parse("""
        [containers.c]
        private-network = true
        host-address = "10.0.0.1"
        local-address = "10.0.0.2/24"
        host-address6 = "fc00::1"
        local-address6 = "fc00::2/64"
        local-mac-address = "02:AB:00:00:00:01"
        forward-ports = [
            { host-port = 80 },
            { protocol = "udp", host-port = 53, container-port = 5353 },
        ]
        interfaces = ["eth1"]
        macvlans = ["eth2"]
        [containers.c.extra-veths.x0]
        host-bridge = "br0"
        local-address = "10.9.0.2/24"
        """).containers["c"]
    assert c.private_network
    assert c.local_mac_address == "02:ab:00:00:00:01"
    assert c.forward_ports == (PortForward("tcp", 80, None), PortForward("udp", 53, 5353))
    assert c.forward_ports[0].target_port == 80
    assert (c.interfaces, c.macvlans) == (("eth1",), ("eth2",))
    assert c.extra_veths[0].name == "x0"
    assert c.extra_veths[0].network.host_bridge == "br0"


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ('host-address = "10.0.0.300"', "containers.c.host-address: expected an IPv4 address "
         "such as 10.233.0.1 or 10.233.0.1/24, got '10.0.0.300'"),
        ('local-address = "fc00::2"', "containers.c.local-address: expected an IPv4 address"),
        ('local-address6 = "10.0.0.2"', "containers.c.local-address6: expected an IPv6 address "
         "such as fc00::1 or fc00::1/64"),
        ('local-mac-address = "02:00:00:00:00"', "containers.c.local-mac-address: expected a MAC "
         "address such as 02:00:00:00:00:01"),
        ('local-mac-address = "01:00:5e:00:00:01"', "containers.c.local-mac-address: "
         "01:00:5e:00:00:01 is a multicast address"),
        ('local-address = "10.0.0.2"\nforward-ports = [{ host-port = 0 }]',
         "containers.c.forward-ports[0].host-port: expected an integer from 1 to 65535, got an "
         "integer (0)"),
        ('local-address = "10.0.0.2"\nforward-ports = [{ host-port = "80x" }]',
         "containers.c.forward-ports[0].host-port: expected an integer from 1 to 65535, got a "
         "string ('80x')"),
        ('local-address = "10.0.0.2"\nforward-ports = [{ protocol = "sctp", host-port = 1 }]',
         'containers.c.forward-ports[0].protocol: expected "tcp" or "udp"'),
        ('local-address = "10.0.0.2"\nforward-ports = [{ container-port = 1 }]',
         "containers.c.forward-ports[0].host-port: missing"),
        ('local-address = "10.0.0.2"\nforward-ports = [{ host-port = 1, hostPort = 2 }]',
         "containers.c.forward-ports[0].hostPort: unknown key"),
        ('local-address = "10.0.0.2"\nforward-ports = [{ host-port = 1 }, { host-port = 1 }]',
         "containers.c.forward-ports[1]: tcp port 1 is forwarded twice"),
        ("forward-ports = [{ host-port = 1 }]", "containers.c.forward-ports: needs local-address "
         "or local-address6 to forward to"),
        ('host-bridge = "a-bridge-name-too-long"', "containers.c.host-bridge: an interface name "
         "has at most 15 bytes"),
        ('interfaces = ["eth 1"]', "containers.c.interfaces[0]: an interface name uses only "
         "letters, digits, '-', '_' and '.' (and is not '.' or '..'), got 'eth 1'"),
        ('host-bridge = "br\\"0"', 'containers.c.host-bridge: an interface name uses only'),
        ('interfaces = ["eth1", "eth1"]', "containers.c.interfaces: eth1 is listed twice"),
        ('interfaces = ["eth1"]\nmacvlans = ["eth1"]', "containers.c: interface eth1 is named "
         "more than once"),
        ('extra-veths.x0 = { host-adress = "10.0.0.1" }', "containers.c.extra-veths.x0."
         "host-adress: unknown key; did you mean 'host-address'?"),
        ('extra-veths."x/0" = {}', 'containers.c.extra-veths."x/0": an interface name uses only'),
        ('network-namespace = "/run/netns/x"', "containers.c.network-namespace: cannot be "
         "combined with private-network"),
        ('network-namespace = "x"', "containers.c.network-namespace: expected an absolute path"),
        ('host-address = "10.0.0.1"\nlocal-address = "10.0.0.1/24"', "containers.c.local-address: "
         "is the same address as host-address; each end of the veth needs its own"),
        ('extra-veths.eth0 = { local-address = "10.1.0.2" }', "containers.c.extra-veths.eth0: "
         "eth0 is taken inside the container"),
    ],
)  # fmt: skip
def test_bad_network_values(toml: str, message: str) -> None:
    found = errors(f"[containers.c]\nprivate-network = true\n{toml}\n")
    assert len(found) == 1, found
    assert found[0].startswith(f"{FILE}: {message}"), found[0]


def test_network_keys_need_a_private_network() -> None:
    found = errors("""
        [containers.c]
        host-address = "10.0.0.1"
        macvlans = ["eth1"]
        """)
    assert found == [
        f"{FILE}: containers.c.host-address: needs private-network = true (without it the "
        "container shares the host's network)",
        f"{FILE}: containers.c.macvlans: needs private-network = true (without it the "
        "container shares the host's network)",
    ]
    joined = parse('[containers.c]\nnetwork-namespace = "/run/netns/x"\n').containers["c"]
    assert joined.network_namespace == "/run/netns/x"


def test_unique_across_containers() -> None:
    found = errors("""
        [containers.a]
        private-network = true
        host-address = "10.0.0.1"
        local-address = "10.0.0.2/24"
        forward-ports = [{ host-port = 80 }]
        [containers.b]
        private-network = true
        host-address = "10.0.0.1"
        local-address = "10.0.0.2"
        forward-ports = [{ host-port = 80 }, { protocol = "udp", host-port = 80 }]
        [containers.c]
        private-network = true
        extra-veths.ve-a = { local-address = "10.1.0.2" }
        """)
    assert found == [
        f"{FILE}: containers.b.local-address: address 10.0.0.2 is also used by "
        "containers.a.local-address",
        f"{FILE}: containers.b.forward-ports[0].host-port: host port tcp/80 is also used by "
        "containers.a.forward-ports[0].host-port",
        f"{FILE}: containers.c.extra-veths.ve-a: host interface ve-a is also used by "
        "containers.a",
    ]


def test_similar_names_get_distinct_host_links() -> None:
    config = parse("""
        [containers.helloabcdef1]
        private-network = true
        local-address = "10.0.0.2"
        [containers.helloabcdef2]
        private-network = true
        local-address = "10.0.0.3"
        """)
    links = {netnames.host_link(n, False) for n in config.containers}
    assert links == {"ve-helloabcdef1", "ve-helloabcdef2"}
    long_a, long_b = "a" * 39 + "1", "a" * 39 + "2"
    a, b = netnames.host_link(long_a, False), netnames.host_link(long_b, True)
    assert len(a) == len(b) == 15
    assert a.startswith("ve-aaaaaaa-") and b.startswith("vb-aaaaaaa-")
    assert netnames.host_link(long_a, False) != netnames.host_link(long_b, False)


def _steps(toml: str, name: str = "c") -> tuple[str, ...]:
    config = parse(toml)
    facts = HostFacts(host=config.host, backend=Backend.DIRECT)
    return render(config.containers[name], facts).net


def test_a_bridge_alone_still_gets_a_veth() -> None:
    steps = _steps('[containers.c]\nprivate-network = true\nhost-bridge = "br0"\n')
    assert "ip link add vb-c type veth peer name eth0 netns cove-c" in steps
    assert "ip link set vb-c master br0" in steps


def test_v6_only_gets_a_veth_and_both_addresses() -> None:
    steps = _steps("""
        [containers.c]
        private-network = true
        host-address6 = "fc00::1"
        local-address6 = "fc00::2"
        """)
    assert "ip link add ve-c type veth peer name eth0 netns cove-c" in steps
    assert "ip -6 addr add fc00::1 dev ve-c nodad" in steps
    assert "ip -n cove-c -6 addr add fc00::2 dev eth0 nodad" in steps
    assert not any(" addr add 10." in s for s in steps)


def test_private_network_alone_is_loopback_only() -> None:
    steps = _steps("[containers.c]\nprivate-network = true\n")
    assert steps == ("ip netns add cove-c", "ip -n cove-c link set lo up")


def test_status_reports_the_host_link_of_a_long_name(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import json
    import subprocess
    import sys

    name = "a-forty-character-container-name-for-you"
    config = tmp_path / "cove.toml"
    config.write_text(
        f"""
        [host]
        backend = "direct"
        runtime-dir = "{tmp_path}/run"
        [containers.{name}]
        private-network = true
        local-address = "10.0.0.2"
        """.replace("\n        ", "\n")
    )
    argv = [sys.executable, "-m", "cove", "--config", str(config), "status", name, "--json"]
    result = subprocess.run(argv, capture_output=True, text=True, check=True)
    link = json.loads(result.stdout)["host-link"]
    assert link == netnames.host_link(name, False)
    assert len(link) == 15


SAMPLES = {
    "private-network": "true",
    "host-bridge": '"br0"',
    "host-address": '"10.0.0.1"',
    "host-address6": '"fc00::1"',
    "local-address": '"10.0.0.2"',
    "local-address6": '"fc00::2"',
    "local-mac-address": '"02:00:00:00:00:02"',
    "forward-ports": "[{ host-port = 80 }]",
    "interfaces": '["eth9"]',
    "macvlans": '["eth8"]',
    "extra-veths": '{ x0 = { local-address = "10.1.0.2" } }',
    "network-namespace": '"/run/netns/other"',
    "nat": "true",
    "allowed-devices": '[{ node = "/dev/fuse" }]',
    "enable-tun": "true",
    "private-users": '"pick"',
}


WITHOUT_RUNTIME = {"allowed-devices", "enable-tun"}  # on the direct backend


@pytest.mark.parametrize("key", sorted(SAMPLES))
def test_every_key_without_a_runtime_is_refused_not_ignored(key: str) -> None:
    extra = ""
    if key not in ("private-network", "network-namespace") and key in {
        s.key for s in NETWORK_SETTINGS
    }:
        extra = "private-network = true\n"
    if key in ("forward-ports", "nat"):
        extra += 'local-address = "10.0.0.2"\n'
    host = '[host]\nnat-interface = "uplink0"\n' if key == "nat" else ""
    config = parse(f"{host}[containers.c]\n{extra}{key} = {SAMPLES[key]}\n")
    facts = HostFacts(host=config.host, backend=Backend.DIRECT)
    unsupported = render(config.containers["c"], facts).unsupported
    assert (key in unsupported) == (key in WITHOUT_RUNTIME), unsupported


def test_every_network_key_has_a_sample() -> None:
    assert {s.key for s in NETWORK_SETTINGS} <= set(SAMPLES)


def test_recipe_images_run_from_the_store() -> None:
    config = parse('[containers.c]\nimage = "ubuntu:noble"\npackages = ["nginx"]\n')
    facts = HostFacts(host=config.host, backend=Backend.DIRECT)
    r = render(config.containers["c"], facts)
    assert r.unsupported == ()
    assert r.layout.lower[0].startswith("/var/lib/cove/images/ubuntu-noble-")


def test_show_ip(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import json
    import subprocess
    import sys

    config = tmp_path / "cove.toml"
    config.write_text(
        "[containers.both]\nprivate-network = true\n"
        'local-address = "10.0.0.2/24"\nlocal-address6 = "fc00::2/64"\n'
        '[containers.six]\nprivate-network = true\nlocal-address6 = "fc00::3"\n'
        "[containers.none]\n"
    )

    def show(*args: str) -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, "-m", "cove", "--config", str(config), "show-ip", *args]
        return subprocess.run(argv, capture_output=True, text=True)

    assert show("both").stdout == "10.0.0.2\n"
    assert show("six").stdout == "fc00::3\n"
    none = show("none")
    assert (none.returncode, none.stdout) == (3, "")
    assert "cove: none has no address" in none.stderr
    data = json.loads(show("both", "--json").stdout)
    assert (data["version"], data["ipv4"], data["ipv6"]) == (1, "10.0.0.2", "fc00::2")
    assert show("undeclared").returncode == 3


def test_nat_needs_an_uplink_and_an_address() -> None:
    found = errors("""
        [containers.a]
        private-network = true
        local-address = "10.0.0.2"
        nat = true
        [containers.b]
        private-network = true
        nat = true
        """)
    assert found == [
        f"{FILE}: containers.b.nat: needs a local-address or local-address6 to masquerade",
        f"{FILE}: containers.a.nat: needs nat-interface in [host]: the uplink to masquerade "
        "through",
    ]


def test_forwarded_ports_are_read_per_container_from_cove_table() -> None:
    from cove.net import forwarded_ports

    listing = """table inet cove {
	chain prerouting {
		type nat hook prerouting priority dstnat; policy accept;
		fib daddr type local jump fwd-web comment "web"
	}
	chain fwd-web {
		meta nfproto ipv4 tcp dport 8080 dnat ip to 10.1.0.2:80
		meta nfproto ipv6 udp dport 5353 dnat ip6 to [fd01::2]:53
	}
	chain fwd-db-2 {
		meta nfproto ipv4 tcp dport 5432 dnat ip to 10.2.0.2:5432
	}
}
"""
    assert forwarded_ports(listing) == {
        ("tcp", 8080): "web",
        ("udp", 5353): "web",
        ("tcp", 5432): "db-2",
    }
    assert forwarded_ports("") == {}
