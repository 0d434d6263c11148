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
from cove.nftplan import forwarding

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


Step = tuple[str, ...]  # one `ip` command, as its argv


def ip(*args: str, ns: str | None = None, v6: bool = False) -> Step:
    return ("ip", *(("-n", ns) if ns else ()), *(("-6",) if v6 else ()), *args)


def _veth_steps(
    ns: str, host: str, guest: str, net: NetworkOptions, default_route: bool
) -> list[Step]:
    steps = [ip("link", "add", host, "type", "veth", "peer", "name", guest, "netns", ns)]
    if net.local_mac_address:
        steps.append(ip("link", "set", guest, "address", net.local_mac_address, ns=ns))
    if net.host_bridge:
        steps.append(ip("link", "set", host, "master", net.host_bridge))
    steps.append(ip("link", "set", host, "up"))
    steps.append(ip("link", "set", guest, "up", ns=ns))
    for host_addr, local_addr, v6 in (
        (net.host_address, net.local_address, False),
        (net.host_address6, net.local_address6, True),
    ):
        # A veth's peer is known: duplicate address detection would only delay the start.
        nodad = ("nodad",) if v6 else ()
        if host_addr and not net.host_bridge:
            steps.append(ip("addr", "add", host_addr, "dev", host, *nodad, v6=v6))
        if local_addr:
            steps.append(ip("addr", "add", local_addr, "dev", guest, *nodad, ns=ns, v6=v6))
        if host_addr and local_addr and not net.host_bridge and not _covers(host_addr, local_addr):
            steps.append(ip("route", "add", _bare(local_addr), "dev", host, v6=v6))
        if host_addr and not (local_addr and _covers(local_addr, host_addr)):
            steps.append(ip("route", "add", _bare(host_addr), "dev", guest, ns=ns, v6=v6))
        if host_addr and default_route:
            gateway = _bare(host_addr)
            steps.append(ip("route", "add", "default", "via", gateway, "dev", guest, ns=ns, v6=v6))
    return steps


def net_steps(c: Container) -> tuple[Step, ...]:
    """Every step that builds this container's network, in order; empty without one."""
    if not c.private_network:
        return ()
    ns = netnames.namespace(c.name)
    steps = [ip("netns", "add", ns), ip("link", "set", "lo", "up", ns=ns)]
    main = c.network
    if main.wants_veth:
        link = netnames.host_link(c.name, bool(c.host_bridge))
        steps += _veth_steps(ns, link, GUEST_LINK, main, default_route=True)
    for veth in c.extra_veths:
        steps += _veth_steps(ns, veth.name, veth.name, veth.network, default_route=False)
    for iface in c.macvlans:
        mv = f"mv-{iface}"[: netnames.MAX_IFNAME]
        # Made straight inside the namespace: no name clash on the host, nothing to move.
        steps += [
            ip("link", "add", "link", iface, "name", mv, "netns", ns, "type", "macvlan", "mode",
               "bridge"),
            ip("link", "set", mv, "up", ns=ns),
        ]  # fmt: skip
    for iface in c.interfaces:
        steps += [ip("link", "set", iface, "netns", ns), ip("link", "set", iface, "up", ns=ns)]
    return tuple(steps)


def plan_text(c: Container, nat_interface: str | None = None) -> tuple[str, ...]:
    """The steps and rules as lines one could type (every value is a single safe word)."""
    forwards = forwarding(c, nat_interface)
    rules: tuple[str, ...] = ()
    if forwards:
        rules = tuple(f"sysctl net.ipv4.conf.{link}.route_localnet=1"
                      for link in forwards.localnet_links)  # fmt: skip
        rules += ("sysctl net.ipv4.ip_forward=1",)
        rules += ("sysctl net.ipv6.conf.all.forwarding=1",) if forwards.v6 else ()
        rules += tuple(f"nft {line}" for line in forwards.script)
    return tuple(" ".join(step) for step in net_steps(c)) + rules
