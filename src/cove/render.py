"""Container + host facts → everything cove would write or run, as values. No I/O.

The nspawn argument order is fixed:
  nspawn, --keep-unit, --register, --machine, --directory, --link-journal, --console,
  --kill-signal, --notify-ready, --boot | --as-pid2, --resolv-conf,
  --network-namespace-path, --private-users,
  --capability, bind mounts (by mount point), tmpfs, environment (by name), extra flags,
  "--", init arguments | command.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePosixPath

from cove.model import AllowedDevice, Backend, Container, HostConfig
from cove.netplan import namespace_path, plan_text
from cove.recipes import recipe_of
from cove.timespan import format_timespan
from cove.unitfile import exec_line, plain, quote_setting, render_unit

NSPAWN_ENV = (("SYSTEMD_NSPAWN_UNIFIED_HIERARCHY", "1"),)
STOP_SIGNAL = "SIGRTMIN+3"
TUN = AllowedDevice("/dev/net/tun", "rwm")


@dataclass(frozen=True)
class HostFacts:
    """What render needs to know about the host, gathered once by the runtime."""

    host: HostConfig
    backend: Backend
    nspawn: str = "/usr/bin/systemd-nspawn"
    cove: str = "/usr/bin/cove"


@dataclass(frozen=True)
class RootLayout:
    """How the container's `/` is assembled (an overlay) just before nspawn runs."""

    root: str
    lower: tuple[str, ...]
    upper: str
    work: str
    scratch: str | None = None
    scratch_size: str | None = None
    host_usr: bool = False
    # image = "host": `base` is this container's own layer (hostname, hosts) and `host_base`
    # the link to the /etc tree generated from the host's, shared by all such containers.
    base: str | None = None
    host_base: str | None = None
    # The `files` key: staged in `files_dir` before the start, copied into the root after.
    files: tuple[tuple[str, str], ...] = ()
    files_dir: str | None = None
    # private-users: when it shifts UIDs ("pick" or a first UID) the layers are ID-mapped, and
    # a persistent container is held to the IDs its files were written with.
    private_users: str = "no"
    name: str = ""

    def to_args(self) -> list[str]:
        args = [
            f"--root={self.root}",
            *(f"--lower={p}" for p in self.lower),
            f"--upper={self.upper}",
            f"--work={self.work}",
        ]
        if self.scratch:
            args += [f"--scratch={self.scratch}", f"--scratch-size={self.scratch_size}"]
        if self.host_usr:
            args.append("--host-usr")
        if self.files_dir:
            args.append(f"--files={self.files_dir}")
        if self.private_users != "no":
            args += [f"--private-users={self.private_users}", f"--name={self.name}"]
        return args


@dataclass(frozen=True)
class Render:
    container: Container
    layout: RootLayout
    argv: tuple[str, ...]
    env: tuple[tuple[str, str], ...]
    unit: str
    required_paths: tuple[str, ...]
    net: tuple[str, ...] = ()
    # Keys this container sets whose runtime does not exist yet on this backend: `start`
    # refuses rather than silently ignoring them.
    unsupported: tuple[str, ...] = ()


def image_path(c: Container, host: HostConfig) -> str:
    """The lower layer of a directory or recipe image (the host image has two, see below)."""
    recipe = recipe_of(c.image, c.packages, host.mirrors)
    if recipe is None:
        return c.image
    return str(host.image_store / recipe.identity)


def root_layout(c: Container, host: HostConfig) -> RootLayout:
    runtime = host.container_runtime(c.name)
    state = host.container_state(c.name)
    base = str(runtime / "base") if c.host_image else None
    host_base = str(host.host_base) if c.host_image else None
    lower = (base, host_base) if base and host_base else (image_path(c, host),)
    files_dir = str(runtime / "files") if c.files else None
    users = c.private_users
    if c.ephemeral:
        scratch = runtime / "scratch"
        return RootLayout(
            str(runtime / "root"),
            lower,
            str(scratch / "upper"),
            str(scratch / "work"),
            str(scratch),
            c.ephemeral_size,
            c.host_image,
            base,
            host_base,
            c.files,
            files_dir,
            users,
            c.name,
        )
    return RootLayout(
        str(runtime / "root"),
        lower,
        str(state / "upper"),
        str(state / "work"),
        host_usr=c.host_image,
        base=base,
        host_base=host_base,
        files=c.files,
        files_dir=files_dir,
        private_users=users,
        name=c.name,
    )


def shifts_users(c: Container) -> bool:
    """private-users moves the guest's UIDs to a range of their own ("pick" or a first UID)."""
    mode = c.private_users
    return mode == "pick" or (mode.isdigit() and int(mode) > 0)


def _bind_arg(source: str, target: str, read_only: bool, idmap: bool) -> str:
    # nspawn splits --bind at ':' and reads backslash escapes, so both are escaped.
    def esc(p: str) -> str:
        return p.replace("\\", "\\\\").replace(":", "\\:")

    flag = "--bind-ro" if read_only else "--bind"
    # With user namespacing, idmap keeps host owners meaningful inside (NixOS does this for
    # its own store mounts only, leaving user bind mounts unreadable).
    return f"{flag}={esc(source)}:{esc(target)}" + (":idmap" if idmap else "")


def nspawn_argv(c: Container, layout: RootLayout, facts: HostFacts, backend: Backend) -> list[str]:
    systemd = backend is Backend.SYSTEMD
    argv = [
        facts.nspawn,
        "--keep-unit",
        f"--register={'yes' if systemd else 'no'}",
        f"--machine={c.name}",
        f"--directory={layout.root}",
    ]
    linked = systemd and c.boot and not c.ephemeral
    argv.append(f"--link-journal={'try-guest' if linked else 'no'}")
    argv.append("--console=read-only" if c.boot else "--console=pipe")
    argv.append(f"--kill-signal={STOP_SIGNAL}")
    if c.boot:
        argv += ["--notify-ready=yes", "--boot"]
    else:
        argv += ["--notify-ready=no", "--as-pid2"]
    argv.append(f"--resolv-conf={'copy-host' if c.copy_resolv_conf else 'off'}")
    netns = namespace_path(c)
    if netns:
        argv.append(f"--network-namespace-path={netns}")
    if c.private_users != "no":
        argv.append(f"--private-users={c.private_users}")
    if shifts_users(c):
        # cove ID-maps the layers itself (nspawn cannot ID-map an overlay root).
        argv.append("--private-users-ownership=off")
    capabilities = capabilities_of(c)
    if capabilities:
        argv.append("--capability=" + ",".join(capabilities))
    idmap = shifts_users(c)
    argv += [_bind_arg(m.host_path, m.mount_point, m.read_only, idmap) for m in c.bind_mounts]
    argv += [f"--tmpfs={t}" for t in c.tmpfs]
    argv += [f"--setenv={k}={v}" for k, v in c.environment]
    argv += c.extra_flags
    argv.append("--")
    argv += ["systemd.firstboot=off"] if c.boot else list(c.command)
    return argv


def capabilities_of(c: Container) -> tuple[str, ...]:
    """additional-capabilities, plus CAP_NET_ADMIN for enable-tun (as NixOS), in order."""
    wanted = list(c.additional_capabilities)
    if c.enable_tun and "CAP_NET_ADMIN" not in wanted and "all" not in wanted:
        wanted.append("CAP_NET_ADMIN")
    return tuple(wanted)


def devices_of(c: Container) -> tuple[AllowedDevice, ...]:
    return (*c.allowed_devices, TUN) if c.enable_tun else c.allowed_devices


def unsupported_keys(c: Container, backend: Backend) -> tuple[str, ...]:
    keys = []
    if backend is Backend.DIRECT:
        # Without systemd nothing applies a device policy or creates the nodes.
        if c.allowed_devices:
            keys.append("allowed-devices")
        if c.enable_tun:
            keys.append("enable-tun")
    return tuple(keys)


def unit_file(c: Container, layout: RootLayout, facts: HostFacts) -> str:
    host = facts.host
    cove = facts.cove
    execute = [
        cove,
        "__exec",
        *layout.to_args(),
        "--",
        *nspawn_argv(c, layout, facts, Backend.SYSTEMD),
    ]
    # The hooks read the file the unit came from, wherever it is.
    config = [f"--config={c.source}"] if c.source else []
    mounts = [] if c.ephemeral else [str(host.container_state(c.name))]
    mounts += [m.host_path for m in c.bind_mounts]
    unit = [
        ("Description", plain(f"cove container {c.name}")),
        ("PartOf", "machines.target"),
        ("Before", "machines.target"),
        ("After", "network.target"),
        *(("RequiresMountsFor", quote_setting(m)) for m in mounts),
    ]
    service = [
        ("Type", "notify"),
        ("NotifyAccess", "all"),
        *(("Environment", quote_setting(f"{k}={v}")) for k, v in NSPAWN_ENV),
        ("ExecStartPre", exec_line([cove, *config, "__hook", "pre-start", c.name])),
        ("ExecStart", exec_line(execute)),
        ("ExecStopPost", exec_line([cove, *config, "__hook", "post-stop", c.name])),
        ("KillMode", "mixed"),
        ("Delegate", "yes"),
        ("Slice", "machine.slice"),
        ("Restart", "on-failure"),
        ("RestartForceExitStatus", "133"),
        ("SuccessExitStatus", "133"),
        ("TimeoutStartSec", format_timespan(c.timeout_start_sec)),
        ("TimeoutStopSec", format_timespan(c.timeout_stop_sec)),
        ("DevicePolicy", "closed"),
        ("DeviceAllow", "char-pts rw"),
        *(("DeviceAllow", f"{plain(d.node)} {d.modifier}") for d in devices_of(c)),
    ]
    install = [("WantedBy", "machines.target")] if c.auto_start else []
    header = [
        f"cove@{c.name}.service, generated by cove from {c.source or 'cove.toml'}.",
        "Do not edit: cove rewrites it.",
    ]
    sections = [("Unit", unit), ("Service", service)]
    if install:
        sections.append(("Install", install))
    return render_unit(header, sections)


def render(c: Container, facts: HostFacts) -> Render:
    layout = root_layout(c, facts.host)
    required = tuple(sorted({m.host_path for m in c.bind_mounts}))
    if c.directory_image or c.archive_image:
        required = (c.image, *required)
    return Render(
        container=c,
        layout=layout,
        argv=tuple(nspawn_argv(c, layout, facts, facts.backend)),
        env=NSPAWN_ENV,
        unit=unit_file(c, layout, facts),
        required_paths=required,
        net=plan_text(c, facts.host.nat_interface),
        unsupported=unsupported_keys(c, facts.backend),
    )


def render_text(r: Render) -> str:
    """`cove render NAME`: the unit, then the argv one argument per line."""
    lines = [
        r.unit.rstrip("\n"),  # its first line names it
        "",
        f"# argv ({len(r.argv)}; as the direct backend runs nspawn, the unit's ExecStart= above "
        "is the systemd backend's)",
    ]
    lines += list(r.argv)
    lines += ["", "# root", *r.layout.to_args()]
    if r.net:
        lines += ["", "# network", *r.net]
    return "\n".join(lines) + "\n"


def state_path(host: HostConfig, name: str) -> PurePosixPath:
    return PurePosixPath(host.state_dir, "state", f"{name}.json")
