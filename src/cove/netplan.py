"""A container's network as the steps that build it, before nspawn starts (DESIGN §7). Pure:
`render` shows these steps and golden files pin them; the network runtime carries them out.

Each step is an `ip` command line (run against the host, or with `-n NS` inside the
container's namespace) or an `nft` rule of cove's own table.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

from cove import netnames
from cove.model import Container, NetworkOptions

if TYPE_CHECKING:
    import ipaddress

GUEST_LINK = "eth0"


def namespace_path(c: Container) -> str | None:
    """What nspawn joins with --network-namespace-path, if anything."""
    if c.network_namespace:
        return c.network_namespace
    if c.private_network:
        return f"/run/netns/{netnames.namespace(c.name)}"
    return None


@functools.cache
def _interface(text: str) -> ipaddress.IPv4Interface | ipaddress.IPv6Interface:
    import ipaddress

    return ipaddress.ip_interface(text)


def _covers(own: str, peer: str) -> bool:
    """Whether the subnet of `own` (an address with its prefix) already reaches `peer`."""
    network = _interface(own).network
    return _interface(peer).ip in network and network.prefixlen < network.max_prefixlen


def _bare(address: str) -> str:
    return str(_interface(address).ip)


def _veth_steps(
    ns: str, host: str, guest: str, net: NetworkOptions, default_route: bool
) -> list[str]:
    inside = f"ip -n {ns}"
    steps = [f"ip link add {host} type veth peer name {guest} netns {ns}"]
    if net.local_mac_address:
        steps.append(f"{inside} link set {guest} address {net.local_mac_address}")
    if net.host_bridge:
        steps.append(f"ip link set {host} master {net.host_bridge}")
    steps.append(f"ip link set {host} up")
    steps.append(f"{inside} link set {guest} up")
    pairs = (
        (net.host_address, net.local_address, ""),
        (net.host_address6, net.local_address6, " -6"),
    )
    for host_addr, local_addr, family in pairs:
        if host_addr and not net.host_bridge:
            steps.append(f"ip{family} addr add {host_addr} dev {host}")
        if local_addr:
            steps.append(f"{inside}{family} addr add {local_addr} dev {guest}")
        if host_addr and local_addr and not net.host_bridge and not _covers(host_addr, local_addr):
            steps.append(f"ip{family} route add {_bare(local_addr)} dev {host}")
        if host_addr and not (local_addr and _covers(local_addr, host_addr)):
            steps.append(f"{inside}{family} route add {_bare(host_addr)} dev {guest}")
        if host_addr and default_route:
            steps.append(f"{inside}{family} route add default via {_bare(host_addr)} dev {guest}")
    return steps


def _forward_steps(net: NetworkOptions, link: str) -> list[str]:
    steps = []
    for f in net.forward_ports:
        for local, family in ((net.local_address, "ip"), (net.local_address6, "ip6")):
            if local:
                target = _bare(local) if family == "ip" else f"[{_bare(local)}]"
                steps.append(
                    f"nft: {family} {f.protocol} dport {f.host_port} dnat to "
                    f"{target}:{f.target_port} via {link}"
                )
    return steps


def net_steps(c: Container) -> tuple[str, ...]:
    """Every step that builds this container's network, in order; empty without one."""
    if not c.private_network:
        return ()
    ns = netnames.namespace(c.name)
    steps = [f"ip netns add {ns}", f"ip -n {ns} link set lo up"]
    main = c.network
    link = netnames.host_link(c.name, bool(c.host_bridge))
    if main.wants_veth:
        steps += _veth_steps(ns, link, GUEST_LINK, main, default_route=True)
    for veth in c.extra_veths:
        steps += _veth_steps(ns, veth.name, veth.name, veth.network, default_route=False)
    for iface in c.macvlans:
        mv = f"mv-{iface}"[: netnames.MAX_IFNAME]
        # Made straight inside the namespace: no name clash on the host, nothing to move.
        steps += [
            f"ip link add link {iface} name {mv} netns {ns} type macvlan mode bridge",
            f"ip -n {ns} link set {mv} up",
        ]
    for iface in c.interfaces:
        steps += [f"ip link set {iface} netns {ns}", f"ip -n {ns} link set {iface} up"]
    if main.wants_veth:
        steps += _forward_steps(main, link)
    for veth in c.extra_veths:
        steps += _forward_steps(veth.network, veth.name)
    return tuple(steps)
