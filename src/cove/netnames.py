"""Names cove gives to network objects on the host, derived from the container's name."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cove.model import Container, NetworkOptions

MAX_IFNAME = 15  # bytes; the kernel's IFNAMSIZ less the NUL


def host_link(container: str, bridged: bool) -> str:
    """The host side of the main veth: ve-NAME, or vb-NAME when it joins a bridge. A name too
    long for the kernel keeps a readable prefix and gains a hash of the full name."""
    prefix = "vb-" if bridged else "ve-"
    full = prefix + container
    if len(full.encode()) <= MAX_IFNAME:
        return full
    import hashlib

    digest = hashlib.sha256(container.encode()).hexdigest()
    return f"{prefix}{container[: MAX_IFNAME - len(prefix) - 5]}-{digest[:4]}"


def namespace(container: str) -> str:
    """The network namespace cove makes for a private network (/run/netns/cove-NAME)."""
    return f"cove-{container}"


def veths(c: Container) -> list[tuple[NetworkOptions, str]]:
    """Each veth pair of a private network with the name of its host end: the main one (when
    NixOS's rule gives it one), then the extra veths, named the same on both sides."""
    if not c.private_network:
        return []
    main = [(c.network, host_link(c.name, bool(c.host_bridge)))] if c.network.wants_veth else []
    return main + [(v.network, v.name) for v in c.extra_veths]
