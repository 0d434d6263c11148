"""The typed, frozen model every layer shares. No I/O, no behaviour beyond properties."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import PurePosixPath


class Backend(StrEnum):
    AUTO = "auto"
    SYSTEMD = "systemd"
    DIRECT = "direct"


@dataclass(frozen=True)
class BindMount:
    mount_point: str
    host_path: str
    read_only: bool = True


@dataclass(frozen=True)
class AllowedDevice:
    node: str
    modifier: str


@dataclass(frozen=True)
class Container:
    name: str
    image: str = "host"
    boot: bool = True
    command: tuple[str, ...] = ()
    ephemeral: bool = False
    ephemeral_size: str = "1G"
    bind_mounts: tuple[BindMount, ...] = ()
    tmpfs: tuple[str, ...] = ()
    environment: tuple[tuple[str, str], ...] = ()
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
    source: str = ""

    @property
    def host_image(self) -> bool:
        return self.image == "host"


@dataclass(frozen=True)
class HostConfig:
    """The `[host]` table: where cove keeps things, and which backend runs containers."""

    backend: Backend = Backend.AUTO
    config_dir: str = "/etc/cove"
    state_dir: str = "/var/lib/cove"
    runtime_dir: str = "/run/cove"
    log_dir: str = "/var/log/cove"
    unit_dir: str = "/etc/systemd/system"
    cgroup: str = "cove"

    @property
    def image_store(self) -> PurePosixPath:
        return PurePosixPath(self.state_dir, "images")

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
