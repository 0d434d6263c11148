"""The network keys of a container and of each of its extra veths (NixOS's shared
"networkOptions"), with their parsers and the checks that span several keys."""

from __future__ import annotations

import re
from typing import Any

from cove import netnames
from cove.model import Container, ExtraVeth, NetworkOptions, PortForward
from cove.parsing import (
    INVALID,
    Diagnostics,
    Setting,
    _Invalid,
    describe,
    key_path,
    parse_abs_path,
    parse_bool,
    parse_table,
    parse_text,
    parse_text_list,
)

IFNAMSIZ = 16  # the kernel's limit, with the terminating NUL
_MAC = re.compile(r"^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$")
_PORT_KEYS = ("protocol", "host-port", "container-port")


def ifname_problem(name: str) -> str | None:
    """Why the kernel would refuse `name` as a network interface name, or None."""
    if not name:
        return "an interface name cannot be empty"
    if len(name.encode()) >= IFNAMSIZ:
        return f"an interface name has at most {IFNAMSIZ - 1} bytes, {name!r} has {len(name)}"
    if name in (".", "..") or not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        return (
            f"an interface name uses only letters, digits, '-', '_' and '.' (and is not '.' "
            f"or '..'), got {name!r}"
        )
    return None


def parse_ifname(value: object, path: str, diag: Diagnostics) -> str | _Invalid:
    text = parse_text(value, path, diag)
    if isinstance(text, _Invalid):
        return text
    problem = ifname_problem(text)
    return diag.error(path, problem) if problem else text


def parse_ifname_list(value: object, path: str, diag: Diagnostics) -> tuple[str, ...] | _Invalid:
    items = parse_text_list(value, path, diag)
    if isinstance(items, _Invalid):
        return items
    before = len(diag.items)
    for i, item in enumerate(items):
        parse_ifname(item, f"{path}[{i}]", diag)
    for item in sorted({i for i in items if items.count(i) > 1}):
        diag.error(path, f"{item} is listed twice")
    return items if len(diag.items) == before else INVALID


def _address_parser(version: int) -> Any:
    example = "10.233.0.1 or 10.233.0.1/24" if version == 4 else "fc00::1 or fc00::1/64"

    def parse(value: object, path: str, diag: Diagnostics) -> str | _Invalid:
        text = parse_text(value, path, diag)
        if isinstance(text, _Invalid):
            return text
        import ipaddress

        try:
            address = ipaddress.ip_interface(text)
        except ValueError:
            address = None
        if address is None or address.version != version:
            return diag.error(path, f"expected an IPv{version} address such as {example}, "
                              f"got {text!r}")  # fmt: skip
        problem = "scoped to an interface (%); cove chooses the interface" if "%" in text else None
        problem = problem or unusable(address)
        if problem:
            return diag.error(path, f"{text!r} is {problem}; expected a unicast address such "
                              f"as {example}")  # fmt: skip
        return text

    return parse


def unusable(address: Any) -> str | None:
    """Why an interface address cannot be a container's or its host side's."""
    ip, network = address.ip, address.network
    if ip.is_multicast:
        return "a multicast address"
    if ip.is_unspecified or ip.is_loopback:
        return "not an address of one host"
    if getattr(ip, "ipv4_mapped", None) is not None:
        return "an IPv4-mapped IPv6 address (use the IPv4 key)"
    small = network.prefixlen >= network.max_prefixlen - 1  # /31, /32, /127, /128
    if not small and ip == network.network_address:
        return f"the network address of {network}"
    if not small and ip.version == 4 and ip == network.broadcast_address:
        return f"the broadcast address of {network}"
    return None


parse_ipv4 = _address_parser(4)
parse_ipv6 = _address_parser(6)


def parse_mac(value: object, path: str, diag: Diagnostics) -> str | _Invalid:
    text = parse_text(value, path, diag)
    if isinstance(text, _Invalid):
        return text
    if not _MAC.match(text):
        return diag.error(path, f"expected a MAC address such as 02:00:00:00:00:01, got {text!r}")
    if int(text[:2], 16) & 1:
        return diag.error(path, f"{text} is a multicast address; an interface needs a unicast one")
    return text.lower()


def _port(value: object, path: str, diag: Diagnostics) -> int | _Invalid:
    if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 65535:
        return value
    return diag.error(path, f"expected an integer from 1 to 65535, got {describe(value)}")


def parse_forward_ports(
    value: object, path: str, diag: Diagnostics
) -> tuple[PortForward, ...] | _Invalid:
    if not isinstance(value, list):
        return diag.error(
            path, f"expected a list of {{ protocol, host-port, container-port }}, got "
            f"{describe(value)}"
        )  # fmt: skip
    forwards: list[PortForward] = []
    before = len(diag.items)
    for i, entry in enumerate(value):
        at = f"{path}[{i}]"
        if not isinstance(entry, dict):
            diag.error(at, f"expected a table {{ protocol, host-port, container-port }}, got "
                       f"{describe(entry)}")  # fmt: skip
            continue
        for unknown in sorted(set(entry) - set(_PORT_KEYS)):
            diag.error(
                f"{at}.{key_path(unknown)}", f"unknown key; expected {', '.join(_PORT_KEYS)}"
            )
        protocol = entry.get("protocol", "tcp")
        if protocol not in ("tcp", "udp"):
            diag.error(f"{at}.protocol", f'expected "tcp" or "udp", got {describe(protocol)}')
        if "host-port" not in entry:
            diag.error(f"{at}.host-port", "missing; expected an integer from 1 to 65535")
            continue
        host = _port(entry["host-port"], f"{at}.host-port", diag)
        container = entry.get("container-port")
        if container is not None:
            container = _port(container, f"{at}.container-port", diag)
        if isinstance(host, int) and not isinstance(container, _Invalid):
            forwards.append(PortForward(str(protocol), host, container))
    return tuple(forwards) if len(diag.items) == before else INVALID


VETH_SETTINGS: tuple[Setting, ...] = (
    Setting("host-bridge", "host_bridge", "interface name", None, parse_ifname,
            "enslave the host side of the veth (vb-NAME; an extra veth's keeps its own name) "
            "to this existing bridge", "hostBridge"),
    Setting("host-address", "host_address", "IPv4 address", None, parse_ipv4,
            "address of the host side of the veth; the main veth's is the guest's default route "
            "(with host-bridge: its gateway on the bridge); an extra veth gets no default route",
            "hostAddress"),
    Setting("host-address6", "host_address6", "IPv6 address", None, parse_ipv6,
            "IPv6 address of the host side (with host-bridge: the guest's gateway)",
            "hostAddress6"),
    Setting("local-address", "local_address", "IPv4 address", None, parse_ipv4,
            "address of the container's side (eth0 for the main veth, the extra veth's name for "
            "an extra one)", "localAddress"),
    Setting("local-address6", "local_address6", "IPv6 address", None, parse_ipv6,
            "IPv6 address of the container's side", "localAddress6"),
    Setting("local-mac-address", "local_mac_address", "MAC address", None, parse_mac,
            "MAC address of the container's side", "localMacAddress"),
    Setting("forward-ports", "forward_ports", "list of {protocol, host-port, container-port}",
            (), parse_forward_ports,
            "host ports forwarded to the container's local address (tcp by default; "
            "container-port defaults to host-port)", "forwardPorts"),
)  # fmt: skip


def parse_extra_veths(
    value: object, path: str, diag: Diagnostics
) -> tuple[ExtraVeth, ...] | _Invalid:
    if not isinstance(value, dict):
        return diag.error(path, f"expected a table keyed by interface name, got {describe(value)}")
    veths: list[ExtraVeth] = []
    ok = True
    for name, table in sorted(value.items()):
        at = f"{path}.{key_path(name)}"
        problem = ifname_problem(name)
        if problem:
            diag.error(at, problem)
        if not isinstance(table, dict):
            diag.error(at, f"expected a table of veth settings, got {describe(table)}")
            ok = False
            continue
        fields = parse_table(table, VETH_SETTINGS, at, diag)
        if fields is None or problem:
            ok = False
            continue
        veths.append(ExtraVeth(name, NetworkOptions(**fields)))
    return tuple(veths) if ok else INVALID


NETWORK_SETTINGS: tuple[Setting, ...] = (
    Setting("private-network", "private_network", "boolean", False, parse_bool,
            "give the container its own network namespace (loopback only, unless a veth, "
            "bridge, macvlan or interface is declared)", "privateNetwork"),
    *VETH_SETTINGS,
    Setting("interfaces", "interfaces", "list of interface names", (), parse_ifname_list,
            "host interfaces moved into the container (moved back at stop)", "interfaces"),
    Setting("macvlans", "macvlans", "list of interface names", (), parse_ifname_list,
            "host interfaces on which a macvlan (mv-IFACE) is made for the container",
            "macvlans"),
    Setting("extra-veths", "extra_veths", "table of veth settings", (), parse_extra_veths,
            "more veth pairs, named the same on both sides, each with the settings of the "
            "main veth", "extraVeths"),
    Setting("nat", "nat", "boolean", False, parse_bool,
            "masquerade the container's outgoing traffic behind [host] nat-interface", None),
    Setting("network-namespace", "network_namespace", "path", None, parse_abs_path,
            "join this existing network namespace (such as /run/netns/NAME) instead of "
            "getting one", "networkNamespace"),
)  # fmt: skip

# Keys that need private-network = true (NixOS drops them silently without it).
PRIVATE_NETWORK_KEYS = tuple(
    s for s in NETWORK_SETTINGS if s.key not in ("private-network", "network-namespace")
)


def set_network_keys(c: Container) -> list[str]:
    """The network keys this container sets to something other than their default."""
    return [s.key for s in NETWORK_SETTINGS if getattr(c, s.field) != s.default]


def check_network(c: Container, path: str, diag: Diagnostics) -> None:
    """Rules that span several network keys of one container."""
    if c.network_namespace is not None:
        for key in ("private-network", "interfaces"):
            if key in set_network_keys(c):
                diag.error(f"{path}.network-namespace", f"cannot be combined with {key}: the "
                           "container joins an existing namespace")  # fmt: skip
    if not c.private_network:
        for s in PRIVATE_NETWORK_KEYS:
            if getattr(c, s.field) != s.default and c.network_namespace is None:
                diag.error(f"{path}.{s.key}", "needs private-network = true (without it the "
                           "container shares the host's network)")  # fmt: skip
    _check_veth(c.network, path, diag)
    for veth in c.extra_veths:
        _check_veth(veth.network, f"{path}.extra-veths.{key_path(veth.name)}", diag)
    if c.nat and not any(
        net.local_address or net.local_address6
        for net in (c.network, *(v.network for v in c.extra_veths))
    ):
        diag.error(f"{path}.nat", "needs a local-address or local-address6 to masquerade")
    for veth in c.extra_veths:
        if veth.name in ("lo", "eth0"):
            message = "is taken inside the container (loopback, main veth); choose another name"
            diag.error(f"{path}.extra-veths.{key_path(veth.name)}", f"{veth.name} {message}")
    names = [*c.interfaces, *c.macvlans, *(v.name for v in c.extra_veths)]
    for name in sorted({n for n in names if names.count(n) > 1}):
        diag.error(path, f"interface {name} is named more than once among interfaces, "
                   "macvlans and extra-veths")  # fmt: skip


def _check_veth(net: NetworkOptions, path: str, diag: Diagnostics) -> None:
    import ipaddress

    for host_key, local_key in (("host-address", "local-address"),
                                ("host-address6", "local-address6")):  # fmt: skip
        host = getattr(net, host_key.replace("-", "_"))
        local = getattr(net, local_key.replace("-", "_"))
        if host and local and ipaddress.ip_interface(host).ip == ipaddress.ip_interface(local).ip:
            diag.error(f"{path}.{local_key}", f"is the same address as {host_key}; each end "
                       "of the veth needs its own")  # fmt: skip
    if net.forward_ports and not (net.local_address or net.local_address6):
        diag.error(f"{path}.forward-ports", "needs local-address or local-address6 to forward "
                   "to")  # fmt: skip
    seen: set[tuple[str, int]] = set()
    for i, forward in enumerate(net.forward_ports):
        key = (forward.protocol, forward.host_port)
        if key in seen:
            diag.error(f"{path}.forward-ports[{i}]", f"{forward.protocol} port "
                       f"{forward.host_port} is forwarded twice")  # fmt: skip
        seen.add(key)


def check_across(containers: dict[str, Container], diag: Diagnostics) -> None:
    """What must be unique on one host: local addresses, forwarded host ports and the names of
    host-side links (after shortening)."""
    import ipaddress

    owners: dict[object, str] = {}

    def claim(thing: object, what: str, path: str) -> None:
        if thing in owners:
            diag.error(path, f"{what} is also used by {owners[thing]}")
        else:
            owners[thing] = path

    for c in containers.values():
        if not c.private_network:
            continue
        base = key_path("containers", c.name)
        paths = [base] if c.network.wants_veth else []
        paths += [f"{base}.extra-veths.{key_path(v.name)}" for v in c.extra_veths]
        for (net, link), path in zip(netnames.veths(c), paths, strict=True):
            claim(("link", link), f"host interface {link}", path)
            for key in ("local-address", "local-address6"):
                text = getattr(net, key.replace("-", "_"))
                if text:
                    ip = ipaddress.ip_interface(text).ip
                    claim(("ip", ip), f"address {ip}", f"{path}.{key}")
            for i, forward in enumerate(net.forward_ports):
                claim(
                    ("port", forward.protocol, forward.host_port),
                    f"host port {forward.protocol}/{forward.host_port}",
                    f"{path}.forward-ports[{i}].host-port",
                )
