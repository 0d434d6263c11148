"""Port forwards as rules of cove's own nftables table, `inet cove` (DESIGN §7). Pure.

Each container gets a chain `fwd-NAME` holding its DNAT rules, entered from the nat hooks
for packets addressed to any of the host's own addresses (from other hosts through
prerouting, from the host itself through output, 127.0.0.1 included). Packets the host sends
from 127.0.0.1 are masqueraded to the container's host-side address, which the container can
answer. Every rule outside the container's chain carries the container's name as comment, so
the container's rules can be removed without touching anyone else's.
"""

from __future__ import annotations

from dataclasses import dataclass

from cove import netnames
from cove.model import Container

TABLE = "cove"
BASE = (
    f"table inet {TABLE} {{",
    "  chain prerouting { type nat hook prerouting priority dstnat; policy accept; }",
    "  chain output { type nat hook output priority -100; policy accept; }",
    "  chain postrouting { type nat hook postrouting priority srcnat; policy accept; }",
    "}",
)


@dataclass(frozen=True)
class Forwarding:
    """What a container's forwards need: nft lines, and the links that must accept
    127.0.0.1 as a source (route_localnet) because the host forwards its loopback there."""

    script: tuple[str, ...]
    localnet_links: tuple[str, ...]
    v6: bool


def chain(name: str) -> str:
    return f"fwd-{name}"


def _bare(address: str) -> str:
    return address.split("/", 1)[0]


def forwarding(c: Container, nat_interface: str | None = None) -> Forwarding | None:
    """The container's rules in cove's table: port forwards, and masquerading behind
    `nat_interface` when it has nat = true. None when it needs no rule."""
    veths = [(net, link) for net, link in netnames.veths(c) if net.forward_ports]
    nat = _nat_rules(c, nat_interface)
    if not veths and not nat:
        return None
    name, table = c.name, f"inet {TABLE}"
    lines = [*BASE]
    if veths:
        lines += [
            f"add chain {table} {chain(name)}",
            f'add rule {table} prerouting fib daddr type local jump {chain(name)} comment "{name}"',
            f'add rule {table} output fib daddr type local jump {chain(name)} comment "{name}"',
        ]
    localnet: list[str] = []
    v6 = any(" ip6 saddr " in rule for rule in nat)
    for net, link in veths:
        for f in net.forward_ports:
            if net.local_address:
                lines.append(
                    f"add rule {table} {chain(name)} meta nfproto ipv4 {f.protocol} dport "
                    f"{f.host_port} dnat ip to {_bare(net.local_address)}:{f.target_port}"
                )
            if net.local_address6:
                v6 = True
                lines.append(
                    f"add rule {table} {chain(name)} meta nfproto ipv6 {f.protocol} dport "
                    f"{f.host_port} dnat ip6 to [{_bare(net.local_address6)}]:{f.target_port}"
                )
        if net.local_address:
            lines.append(
                f"add rule {table} postrouting ip saddr 127.0.0.0/8 ip daddr "
                f'{_bare(net.local_address)} masquerade comment "{name}"'
            )
            localnet.append(net.host_bridge or link)
    return Forwarding(tuple(lines + nat), tuple(localnet), v6)


def _nat_rules(c: Container, uplink: str | None) -> list[str]:
    if not (c.private_network and c.nat and uplink):
        return []
    rules = []
    for net in (c.network, *(v.network for v in c.extra_veths)):
        for address, family in ((net.local_address, "ip"), (net.local_address6, "ip6")):
            if address:
                rules.append(
                    f'add rule inet {TABLE} postrouting oifname "{uplink}" {family} saddr '
                    f'{_bare(address)} masquerade comment "{c.name}"'
                )
    return rules
