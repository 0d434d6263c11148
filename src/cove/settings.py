"""The settings tables of cove.toml: every container key and every [host] key, one row each
(DESIGN §3), with the parsers particular to them."""

from __future__ import annotations

import re

from cove.model import AllowedDevice, Backend, BindMount
from cove.netsettings import NETWORK_SETTINGS, parse_ifname
from cove.parsing import (
    INVALID,
    Diagnostics,
    Setting,
    _Invalid,
    describe,
    key_path,
    parse_abs_path,
    parse_bool,
    parse_text,
    parse_text_list,
)
from cove.recipes import MIRRORS, PACKAGE, parse_recipe
from cove.timespan import parse_timespan

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_SIZE = re.compile(r"^(\d+(\.\d+)?[KMGT]?|\d{1,3}%)$")
# Characters overlayfs would read as option or layer separators.
_OVERLAY_UNSAFE = re.compile(r"[,:\\]")


def parse_layer_path(value: object, path: str, diag: Diagnostics) -> str | _Invalid:
    """An absolute path that becomes an overlayfs layer or mount option."""
    text = parse_abs_path(value, path, diag)
    if isinstance(text, str) and _OVERLAY_UNSAFE.search(text):
        return diag.error(path, f"',', ':' and '\\' cannot be used in this path, got {text!r}")
    return text


def parse_image(value: object, path: str, diag: Diagnostics) -> str | _Invalid:
    text = parse_text(value, path, diag)
    if isinstance(text, _Invalid) or text == "host":
        return text
    if text.startswith("/"):
        return parse_layer_path(text, path, diag)
    if parse_recipe(text):
        return text
    return diag.error(
        path,
        f'expected "host", a recipe ({", ".join(f"{d}:SUITE" for d in MIRRORS)}), or an '
        "absolute path to a root directory or a .tar, .tar.gz or .tar.zst archive, "
        f"got {text!r}",
    )


def parse_packages(value: object, path: str, diag: Diagnostics) -> tuple[str, ...] | _Invalid:
    items = parse_text_list(value, path, diag)
    if isinstance(items, _Invalid):
        return items
    bad = [i for i, name in enumerate(items) if not PACKAGE.match(name)]
    for i in bad:
        diag.error(f"{path}[{i}]", f"expected a package name such as nginx, got {items[i]!r}")
    return INVALID if bad else items


def parse_tmpfs(value: object, path: str, diag: Diagnostics) -> tuple[str, ...] | _Invalid:
    items = parse_text_list(value, path, diag)
    if isinstance(items, _Invalid):
        return items
    bad = [i for i, item in enumerate(items) if not item.startswith("/")]
    for i in bad:
        diag.error(f"{path}[{i}]", f"expected an absolute path (PATH[:OPTIONS]), got {items[i]!r}")
    return INVALID if bad else items


# Where written files would be hidden by what nspawn or the guest mounts at boot.
_FILES_HIDDEN = ("/proc", "/sys", "/dev", "/run")


def parse_files(
    value: object, path: str, diag: Diagnostics
) -> tuple[tuple[str, str], ...] | _Invalid:
    if not isinstance(value, dict):
        return diag.error(path, f'expected a table of "/path" = "content", got {describe(value)}')
    files: list[tuple[str, str]] = []
    before = len(diag.items)
    for target, content in value.items():
        at = f"{path}.{key_path(target)}"
        clean = parse_abs_path(target, at, diag)
        if isinstance(clean, str):
            if clean.rstrip("/") == "" or clean.endswith("/") or "//" in clean:
                diag.error(at, f"expected the path of a file, got {clean!r}")
            elif clean.startswith(tuple(d + "/" for d in _FILES_HIDDEN)):
                diag.error(at, f"{clean.split('/')[1]} is mounted over at start; a file there "
                           "would be hidden")  # fmt: skip
        if not isinstance(content, str):
            diag.error(at, f"expected the file's content as a string, got {describe(content)}")
        elif isinstance(clean, str):
            files.append((clean, content))
    return tuple(sorted(files)) if len(diag.items) == before else INVALID


def parse_environment(
    value: object, path: str, diag: Diagnostics
) -> tuple[tuple[str, str], ...] | _Invalid:
    if not isinstance(value, dict):
        return diag.error(path, f'expected a table of NAME = "value", got {describe(value)}')
    result: list[tuple[str, str]] = []
    ok = True
    for name, raw in value.items():
        at = f"{path}.{key_path(name)}"
        if not _ENV_NAME.match(name):
            diag.error(
                at,
                "expected a variable name of letters, digits and '_', not starting " "with a digit",
            )
            ok = False
            continue
        text = parse_text(raw, at, diag)
        if isinstance(text, _Invalid):
            ok = False
        else:
            result.append((name, text))
    return tuple(sorted(result)) if ok else INVALID


def parse_seconds(value: object, path: str, diag: Diagnostics) -> float | _Invalid:
    if isinstance(value, int) and not isinstance(value, bool):
        seconds: float | None = float(value)
    elif isinstance(value, str):
        seconds = parse_timespan(value)
    else:
        seconds = None
    if seconds is None or seconds <= 0:
        return diag.error(
            path,
            f'expected a positive number of seconds or a time span such as "90s" or "2min",'
            f" got {describe(value)}",
        )
    return seconds


def parse_size(value: object, path: str, diag: Diagnostics) -> str | _Invalid:
    text = parse_text(value, path, diag)
    if isinstance(text, str) and not _SIZE.match(text):
        return diag.error(path, f'expected a size such as "512M", "2G" or "10%", got {text!r}')
    return text


_BIND_KEYS = ("host-path", "is-read-only", "mount-point")


def parse_bind_mounts(
    value: object, path: str, diag: Diagnostics
) -> tuple[BindMount, ...] | _Invalid:
    if not isinstance(value, dict):
        return diag.error(path, f"expected a table keyed by mount point, got {describe(value)}")
    mounts: list[BindMount] = []
    ok = True
    for key, entry in sorted(value.items()):
        at = f"{path}.{key_path(key)}"
        if not isinstance(entry, dict):
            diag.error(at, f"expected a table with {', '.join(_BIND_KEYS)}, got {describe(entry)}")
            ok = False
            continue
        for unknown in sorted(set(entry) - set(_BIND_KEYS)):
            diag.error(
                f"{at}.{key_path(unknown)}", f"unknown key; expected {', '.join(_BIND_KEYS)}"
            )
            ok = False
        mount_point = parse_abs_path(entry.get("mount-point", key), f"{at}.mount-point", diag)
        if "host-path" in entry:
            host_path = parse_abs_path(entry["host-path"], f"{at}.host-path", diag)
        else:  # NixOS: a null hostPath mounts the same path from the host
            host_path = mount_point
        read_only = parse_bool(entry.get("is-read-only", True), f"{at}.is-read-only", diag)
        if (
            isinstance(mount_point, str)
            and isinstance(host_path, str)
            and isinstance(read_only, bool)
        ):
            mounts.append(BindMount(mount_point, host_path, read_only))
        else:
            ok = False
    return tuple(mounts) if ok else INVALID


CAPABILITIES = frozenset(
    "CAP_" + name
    for name in (
        "CHOWN DAC_OVERRIDE DAC_READ_SEARCH FOWNER FSETID KILL SETGID SETUID SETPCAP "
        "LINUX_IMMUTABLE NET_BIND_SERVICE NET_BROADCAST NET_ADMIN NET_RAW IPC_LOCK IPC_OWNER "
        "SYS_MODULE SYS_RAWIO SYS_CHROOT SYS_PTRACE SYS_PACCT SYS_ADMIN SYS_BOOT SYS_NICE "
        "SYS_RESOURCE SYS_TIME SYS_TTY_CONFIG MKNOD LEASE AUDIT_WRITE AUDIT_CONTROL SETFCAP "
        "MAC_OVERRIDE MAC_ADMIN SYSLOG WAKE_ALARM BLOCK_SUSPEND AUDIT_READ PERFMON BPF "
        "CHECKPOINT_RESTORE"
    ).split()
)


def parse_capabilities(value: object, path: str, diag: Diagnostics) -> tuple[str, ...] | _Invalid:
    items = parse_text_list(value, path, diag)
    if isinstance(items, _Invalid):
        return items
    ok = True
    for i, item in enumerate(items):
        if item not in CAPABILITIES and item != "all":
            near = "CAP_" + item.upper().removeprefix("CAP_")
            hint = f"; did you mean {near!r}?" if near in CAPABILITIES else ""
            message = "expected a capability name such as CAP_NET_ADMIN, or all"
            diag.error(f"{path}[{i}]", f"{message}, got {item!r}{hint}")
            ok = False
    return items if ok else INVALID


_DEVICE_CLASS = re.compile(r"^(char|block)-[A-Za-z0-9_.*-]+$")
_MODIFIER = re.compile(r"^(?!.*(.).*\1)[rwm]{1,3}$")
_DEVICE_KEYS = ("node", "modifier")


def parse_devices(
    value: object, path: str, diag: Diagnostics
) -> tuple[AllowedDevice, ...] | _Invalid:
    if not isinstance(value, list):
        return diag.error(path, f"expected a list of {{ node, modifier }}, got {describe(value)}")
    devices: list[AllowedDevice] = []
    before = len(diag.items)
    for i, entry in enumerate(value):
        at = f"{path}[{i}]"
        if not isinstance(entry, dict):
            diag.error(at, f"expected a table {{ node, modifier }}, got {describe(entry)}")
            continue
        for unknown in sorted(set(entry) - set(_DEVICE_KEYS)):
            diag.error(f"{at}.{key_path(unknown)}", "unknown key; expected node, modifier")
        if "node" in entry:
            node = parse_text(entry["node"], f"{at}.node", diag)
        else:
            node = diag.error(f"{at}.node", "missing; expected a device path such as /dev/fuse")
        if isinstance(node, str) and not (
            (
                node.startswith("/dev/")
                and " " not in node
                and "/.." not in node
                and "/./" not in node
                and node.isprintable()
            )
            or _DEVICE_CLASS.match(node)
        ):
            node = diag.error(
                f"{at}.node",
                f"expected a device path under /dev/ or char-NAME / block-NAME, got {node!r}",
            )
        modifier = parse_text(entry.get("modifier", "rwm"), f"{at}.modifier", diag)
        if isinstance(modifier, str) and not _MODIFIER.match(modifier):
            modifier = diag.error(
                f"{at}.modifier", f"expected a combination of r, w and m, got {modifier!r}"
            )
        if isinstance(node, str) and isinstance(modifier, str):
            devices.append(AllowedDevice(node, modifier))
    return tuple(devices) if len(diag.items) == before else INVALID


PRIVATE_USERS_MODES = ("no", "identity", "pick")
MAX_UID_BASE = 2**32 - 2**16


def parse_private_users(value: object, path: str, diag: Diagnostics) -> str | _Invalid:
    if isinstance(value, str) and value in PRIVATE_USERS_MODES:
        return value
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_UID_BASE:
        return str(value)
    return diag.error(
        path,
        f'expected "no", "identity", "pick" or a first UID from 0 to {MAX_UID_BASE}, got '
        f"{describe(value)}",
    )


# Flags that cove itself sets and relies on; each has a key of its own, or is cove's job.
OWNED_FLAGS = {
    "--directory": "image",
    "-D": "image",
    "--image": "image",
    "-i": "image",
    "--machine": "the container's name",
    "-M": "the container's name",
    "--boot": "boot",
    "-b": "boot",
    "--as-pid2": "boot = false",
    "-a": "boot = false",
    "--ephemeral": "ephemeral",
    "-x": "ephemeral",
    "--volatile": "ephemeral",
    "--keep-unit": "cove's backend",
    "--register": "cove's backend",
    "--notify-ready": "cove's backend",
    "--kill-signal": "cove's backend",
    "--link-journal": "cove's backend",
    "--console": "cove's backend",
    "--network-namespace-path": "network-namespace",
    "--private-users": "private-users",
    "--private-users-ownership": "private-users",
    "-U": "private-users",
    "--capability": "additional-capabilities",
    "--resolv-conf": "copy-resolv-conf",
}


def parse_extra_flags(value: object, path: str, diag: Diagnostics) -> tuple[str, ...] | _Invalid:
    items = parse_text_list(value, path, diag)
    if isinstance(items, _Invalid):
        return items
    ok = True
    for i, flag in enumerate(items):
        # --long[=value], or a short option with its value attached (-D/srv/x)
        name = flag.split("=", 1)[0] if flag.startswith("--") else flag[:2]
        owner = OWNED_FLAGS.get(name)
        if not flag.startswith("-"):
            diag.error(
                f"{path}[{i}]",
                f"expected a systemd-nspawn option such as --option=value, got {flag!r} "
                "(each element is one argument: write --bind=/a:/b, not --bind, /a:/b)",
            )
            ok = False
        elif owner:
            diag.error(f"{path}[{i}]", f"{name} is set by cove; use {owner} instead")
            ok = False
    return items if ok else INVALID


CONTAINER_SETTINGS: tuple[Setting, ...] = (
    Setting(
        "image",
        "image",
        "string",
        "host",
        parse_image,
        'root image: "host" (the host\'s /usr, read-only, with a generated /etc), a recipe '
        'such as "debian:bookworm" built into the image store, an absolute path to a root '
        "directory (used in place), or an absolute path to a .tar, .tar.gz or .tar.zst root "
        "file system archive (imported into the image store once)",
        None,
    ),
    Setting(
        "packages",
        "packages",
        "list of strings",
        (),
        parse_packages,
        "distribution packages installed into a recipe image (part of its identity)",
    ),
    Setting(
        "boot",
        "boot",
        "boolean",
        True,
        parse_bool,
        "run the image's init as PID 1 (a system container); false runs `command`",
    ),
    Setting(
        "command",
        "command",
        "list of strings",
        (),
        parse_text_list,
        "argv of the application to run when boot = false",
    ),
    Setting(
        "ephemeral",
        "ephemeral",
        "boolean",
        False,
        parse_bool,
        "start from the pristine image each time; every change is gone at stop",
        "ephemeral",
    ),
    Setting(
        "ephemeral-size",
        "ephemeral_size",
        "size",
        "1G",
        parse_size,
        "size of the tmpfs that holds an ephemeral container's changes",
    ),
    Setting(
        "bind-mounts",
        "bind_mounts",
        "table of {host-path, is-read-only, mount-point}",
        (),
        parse_bind_mounts,
        "host directories mounted into the container, keyed by mount point; read-only "
        "unless is-read-only = false",
        "bindMounts",
    ),
    Setting(
        "tmpfs",
        "tmpfs",
        "list of strings",
        (),
        parse_tmpfs,
        "tmpfs mounts inside the container, as PATH[:OPTIONS]",
        "tmpfs",
    ),
    Setting(
        "environment",
        "environment",
        "table of strings",
        (),
        parse_environment,
        "variables for PID 1 and `cove run` (visible to root on the host in nspawn's "
        "command line)",
    ),
    Setting(
        "files",
        "files",
        'table of "/path" = "content"',
        (),
        parse_files,
        "files written into the container's root at every start, replacing what is there "
        "(mode 0644, owned by root)",
    ),
    Setting(
        "timeout-start-sec",
        "timeout_start_sec",
        "time span",
        60.0,
        parse_seconds,
        "how long a start may take before it fails",
        "timeoutStartSec",
    ),
    Setting(
        "timeout-stop-sec",
        "timeout_stop_sec",
        "time span",
        90.0,
        parse_seconds,
        "how long a clean stop may take before the container is killed",
    ),
    Setting(
        "auto-start",
        "auto_start",
        "boolean",
        False,
        parse_bool,
        "start with the host (the unit is wanted by machines.target) and on `cove apply`",
        "autoStart",
    ),
    Setting(
        "restart-if-changed",
        "restart_if_changed",
        "boolean",
        True,
        parse_bool,
        "`cove apply` restarts the running container when its settings changed",
        "restartIfChanged",
    ),
    Setting(
        "additional-capabilities",
        "additional_capabilities",
        "list of strings",
        (),
        parse_capabilities,
        "capabilities beyond nspawn's default set, such as CAP_NET_ADMIN, or all",
        "additionalCapabilities",
    ),
    Setting(
        "allowed-devices",
        "allowed_devices",
        "list of {node, modifier}",
        (),
        parse_devices,
        "device nodes the container may use (modifier: r, w, m; default rwm)",
        "allowedDevices",
    ),
    Setting(
        "enable-tun",
        "enable_tun",
        "boolean",
        False,
        parse_bool,
        "allow /dev/net/tun and grant CAP_NET_ADMIN (for VPNs)",
        "enableTun",
    ),
    Setting(
        "private-users",
        "private_users",
        'string or integer ("no", "identity", "pick", first UID)',
        "no",
        parse_private_users,
        'user namespace: "pick" (a free range of 65536 host UIDs), a first UID, or "identity"; '
        "layers and bind mounts are ID-mapped",
        "privateUsers",
    ),
    Setting(
        "extra-flags",
        "extra_flags",
        "list of strings",
        (),
        parse_extra_flags,
        "more systemd-nspawn options, one argument each (--option=value)",
        "extraFlags",
    ),
    Setting(
        "copy-resolv-conf",
        "copy_resolv_conf",
        "boolean",
        True,
        parse_bool,
        "copy the host's /etc/resolv.conf into the container at each start",
        "copyResolvConf",
    ),
    *NETWORK_SETTINGS,
)


def parse_mirror(value: object, path: str, diag: Diagnostics) -> str | _Invalid:
    text = parse_text(value, path, diag)
    if isinstance(text, str) and not re.fullmatch(r"(https?|file)://[^\s'\"]+", text):
        return diag.error(path, f"expected an http(s):// or file:// URL, got {text!r}")
    return text


def parse_pool(value: object, path: str, diag: Diagnostics) -> str | _Invalid:
    import ipaddress

    text = parse_text(value, path, diag)
    if isinstance(text, _Invalid):
        return text
    try:
        network = ipaddress.IPv4Network(text)
    except ValueError:
        return diag.error(path, f"expected an IPv4 network such as 10.233.0.0/16, got {text!r}")
    if network.prefixlen > 24:
        return diag.error(path, f"expected a network of at least a /24, got {text!r}")
    return text


def parse_backend(value: object, path: str, diag: Diagnostics) -> Backend | _Invalid:
    choices = [b.value for b in Backend]
    if isinstance(value, str) and value in choices:
        return Backend(value)
    return diag.error(path, f"expected one of {', '.join(choices)}, got {describe(value)}")


def parse_cgroup_name(value: object, path: str, diag: Diagnostics) -> str | _Invalid:
    if isinstance(value, str) and re.fullmatch(r"[a-z0-9][a-z0-9._-]{0,63}", value):
        return value
    return diag.error(path, f"expected a cgroup name of [a-z0-9._-], got {describe(value)}")


HOST_SETTINGS: tuple[Setting, ...] = (
    Setting(
        "backend",
        "backend",
        "string",
        Backend.AUTO.value,
        parse_backend,
        '"systemd" (units run by systemd), "direct" (cove supervises nspawn itself) or '
        '"auto" (systemd where PID 1 is systemd)',
    ),
    Setting(
        "config-dir",
        "config_dir",
        "path",
        "/etc/cove",
        parse_abs_path,
        "where imperative containers live (containers/NAME.toml)",
    ),
    Setting(
        "state-dir",
        "state_dir",
        "path",
        "/var/lib/cove",
        parse_layer_path,
        "persistent container data and cove's records",
    ),
    Setting(
        "runtime-dir",
        "runtime_dir",
        "path",
        "/run/cove",
        parse_layer_path,
        "sockets, locks and mount points of running containers",
    ),
    Setting(
        "log-dir",
        "log_dir",
        "path",
        "/var/log/cove",
        parse_abs_path,
        "console logs, kept after stop (also for ephemeral containers)",
    ),
    Setting(
        "unit-dir",
        "unit_dir",
        "path",
        "/etc/systemd/system",
        parse_abs_path,
        "where the systemd backend writes cove@NAME.service",
    ),
    Setting(
        "image-dir",
        "image_dir",
        "path",
        None,
        parse_layer_path,
        "the image store (default: images/ in the state dir)",
    ),
    Setting(
        "debian-mirror",
        "debian_mirror",
        "URL",
        "http://deb.debian.org/debian",
        parse_mirror,
        "where debian:SUITE recipes are built from",
    ),
    Setting(
        "ubuntu-mirror",
        "ubuntu_mirror",
        "URL",
        "http://archive.ubuntu.com/ubuntu",
        parse_mirror,
        "where ubuntu:SUITE recipes are built from",
    ),
    Setting(
        "hosts-file",
        "hosts_file",
        "path",
        "/etc/hosts",
        parse_abs_path,
        "where NAME.containers names are kept, in a block cove owns per config file",
    ),
    Setting(
        "cgroup",
        "cgroup",
        "string",
        "cove",
        parse_cgroup_name,
        "name of the cgroup under which the direct backend runs containers",
    ),
    Setting(
        "nat-interface",
        "nat_interface",
        "interface name",
        None,
        parse_ifname,
        "the uplink through which containers with nat = true reach other networks "
        "(their addresses are masqueraded behind it)",
    ),
    Setting(
        "address-pool",
        "address_pool",
        "IPv4 network",
        "10.233.0.0/16",
        parse_pool,
        "where containers created without addresses get theirs: the N-th /24 gives N.1 to "
        "the host side and N.2 to the container",
    ),
)
