"""The typed, frozen model every layer shares. No I/O, no behaviour beyond properties."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from enum import StrEnum
from pathlib import PurePosixPath


class Backend(StrEnum):
    AUTO = "auto"
    SYSTEMD = "systemd"
    DIRECT = "direct"


ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.zst", ".tzst")


@dataclass(frozen=True)
class BindMount:
    mount_point: str
    host_path: str
    read_only: bool = True


@dataclass(frozen=True)
class PortForward:
    protocol: str
    host_port: int
    container_port: int | None = None  # None: the same as host_port (NixOS)

    @property
    def target_port(self) -> int:
        return self.container_port or self.host_port


@dataclass(frozen=True)
class NetworkOptions:
    """The options NixOS shares between a container's main veth and each extra veth."""

    host_bridge: str | None = None
    host_address: str | None = None
    host_address6: str | None = None
    local_address: str | None = None
    local_address6: str | None = None
    local_mac_address: str | None = None
    forward_ports: tuple[PortForward, ...] = ()

    @property
    def wants_veth(self) -> bool:
        """NixOS: a veth exists only with an address, a MAC or a bridge."""
        return any(
            (
                self.host_bridge,
                self.host_address,
                self.host_address6,
                self.local_address,
                self.local_address6,
                self.local_mac_address,
            )
        )


@dataclass(frozen=True)
class ExtraVeth:
    name: str
    network: NetworkOptions


@dataclass(frozen=True)
class AllowedDevice:
    node: str
    modifier: str


@dataclass(frozen=True)
class Container:
    name: str
    image: str = "host"
    packages: tuple[str, ...] = ()
    boot: bool = True
    command: tuple[str, ...] = ()
    ephemeral: bool = False
    ephemeral_size: str = "1G"
    bind_mounts: tuple[BindMount, ...] = ()
    tmpfs: tuple[str, ...] = ()
    environment: tuple[tuple[str, str], ...] = ()
    files: tuple[tuple[str, str], ...] = ()
    timeout_start_sec: float = 60.0
    timeout_stop_sec: float = 90.0
    auto_start: bool = False
    restart_if_changed: bool = True
    additional_capabilities: tuple[str, ...] = ()
    allowed_devices: tuple[AllowedDevice, ...] = ()
    enable_tun: bool = False
    private_users: str = "no"
    extra_flags: tuple[str, ...] = ()
    copy_resolv_conf: bool = True
    private_network: bool = False
    host_bridge: str | None = None
    host_address: str | None = None
    host_address6: str | None = None
    local_address: str | None = None
    local_address6: str | None = None
    local_mac_address: str | None = None
    forward_ports: tuple[PortForward, ...] = ()
    interfaces: tuple[str, ...] = ()
    macvlans: tuple[str, ...] = ()
    extra_veths: tuple[ExtraVeth, ...] = ()
    network_namespace: str | None = None
    nat: bool = False
    source: str = ""

    @property
    def host_image(self) -> bool:
        return self.image == "host"

    @property
    def archive_image(self) -> bool:
        """A root file system archive, imported into the image store at the first start."""
        return self.image.startswith("/") and self.image.endswith(ARCHIVE_SUFFIXES)

    @property
    def directory_image(self) -> bool:
        return self.image.startswith("/") and not self.archive_image

    @property
    def network(self) -> NetworkOptions:
        """The main veth's options (top-level keys of the same names, as in NixOS)."""
        return NetworkOptions(**{f.name: getattr(self, f.name) for f in fields(NetworkOptions)})


@dataclass(frozen=True)
class HostConfig:
    """The `[host]` table: where cove keeps things, and which backend runs containers."""

    backend: Backend = Backend.AUTO
    config_dir: str = "/etc/cove"
    state_dir: str = "/var/lib/cove"
    runtime_dir: str = "/run/cove"
    log_dir: str = "/var/log/cove"
    unit_dir: str = "/etc/systemd/system"
    hosts_file: str = "/etc/hosts"
    image_dir: str | None = None
    debian_mirror: str = "http://deb.debian.org/debian"
    ubuntu_mirror: str = "http://archive.ubuntu.com/ubuntu"
    cgroup: str = "cove"
    nat_interface: str | None = None
    address_pool: str = "10.233.0.0/16"

    @property
    def image_store(self) -> PurePosixPath:
        return PurePosixPath(self.image_dir or PurePosixPath(self.state_dir, "images"))

    @property
    def mirrors(self) -> dict[str, str]:
        return {"debian": self.debian_mirror, "ubuntu": self.ubuntu_mirror}

    @property
    def host_base(self) -> PurePosixPath:
        """Link to the current generated root of `image = "host"` in the image store."""
        return self.image_store / "host"

    def container_state(self, name: str) -> PurePosixPath:
        return PurePosixPath(self.state_dir, "containers", name)

    def container_runtime(self, name: str) -> PurePosixPath:
        return PurePosixPath(self.runtime_dir, name)

    def container_log(self, name: str) -> PurePosixPath:
        return PurePosixPath(self.log_dir, name)


@dataclass(frozen=True)
class Config:
    path: str
    host: HostConfig = field(default_factory=HostConfig)
    containers: dict[str, Container] = field(default_factory=dict)
    # The file as read: its bytes and (device, inode, size, mtime, ctime), which tell a later
    # command that nothing changed since (see quickstart).
    data: bytes = b""
    stamp: tuple[int, ...] = ()
