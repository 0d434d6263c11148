"""Config parsing and validation: every error names the file and key path, all at once."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from cove.config import config_path, parse_config
from cove.errors import ConfigError
from cove.model import AllowedDevice, Backend, BindMount

FILE = "/etc/cove/cove.toml"


def parse(text: str):  # type: ignore[no-untyped-def]
    return parse_config(textwrap.dedent(text).encode(), FILE)


def errors(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse(text)
    return [str(d) for d in info.value.diagnostics]


def test_defaults_follow_nixos() -> None:
    c = parse("[containers.web]\n").containers["web"]
    assert c.image == "host"
    assert c.boot is True
    assert c.ephemeral is False
    assert c.timeout_start_sec == 60.0  # NixOS timeoutStartSec = "1min"
    assert c.timeout_stop_sec == 90.0  # systemd's default
    assert c.bind_mounts == ()


def test_every_slice_key_parses() -> None:
    config = parse("""
        [host]
        backend = "direct"
        state-dir = "/srv/cove"
        [containers.app]
        image = "/srv/images/bb"
        boot = false
        command = ["/bin/sh", "-c", "echo hi"]
        ephemeral = true
        ephemeral-size = "256M"
        tmpfs = ["/scratch:mode=0755"]
        environment = { GREETING = "hello world", B = "%$\\"x" }
        timeout-start-sec = "1min 30s"
        timeout-stop-sec = 5
        [containers.app.bind-mounts."/data"]
        host-path = "/srv/my data"
        is-read-only = false
        [containers.app.bind-mounts."/etc/x"]
        """)
    assert config.host.backend is Backend.DIRECT
    assert config.host.state_dir == "/srv/cove"
    c = config.containers["app"]
    assert c.command == ("/bin/sh", "-c", "echo hi")
    assert c.ephemeral_size == "256M"
    assert c.tmpfs == ("/scratch:mode=0755",)
    assert c.environment == (("B", '%$"x'), ("GREETING", "hello world"))
    assert c.timeout_start_sec == 90.0
    assert c.timeout_stop_sec == 5.0
    assert c.bind_mounts == (
        BindMount("/data", "/srv/my data", read_only=False),
        BindMount("/etc/x", "/etc/x", read_only=True),
    )


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("web_1", "containers.web_1: '_' is not allowed in a container name (machined rejects "
                  "it); use '-' instead"),
        ("", 'containers."": a container name cannot be empty'),
        ("a" * 65, f"containers.{'a' * 65}: a container name has at most 64 characters, this "
                   "one has 65"),
        ("Web", "containers.Web: a container name uses only a-z, 0-9 and '-'"),
        ("-web", 'containers.-web: a container name uses only a-z'),
        ("wéb", 'containers."wéb": a container name uses only a-z'),
    ],
)  # fmt: skip
def test_bad_names(name: str, message: str) -> None:
    found = errors(f'[containers."{name}"]\n')
    assert len(found) == 1
    assert found[0].startswith(f"{FILE}: {message}")


def test_64_character_name_is_fine() -> None:
    assert "a" * 64 in parse(f"[containers.{'a' * 64}]\n").containers


def test_all_errors_reported_at_once() -> None:
    found = errors("""
        [containers.web]
        boot = "yes"
        imgae = "host"
        timeout-stop-sec = "soon"
        [containers.web.bind-mounts."/data"]
        host-path = "relative/path"
        [containers.db_1]
        ephemeral = 1
        [network]
        """)
    assert found == [
        f"{FILE}: network: unknown table; expected [host] or [containers.NAME]",
        f"{FILE}: containers.web.imgae: unknown key; did you mean 'image'?",
        f"{FILE}: containers.web.boot: expected true or false, got a string ('yes')",
        f"{FILE}: containers.web.timeout-stop-sec: expected a positive number of seconds or a "
        f'time span such as "90s" or "2min", got a string (\'soon\')',
        f'{FILE}: containers.web.bind-mounts."/data".host-path: expected an absolute path, got '
        "'relative/path'",
        f"{FILE}: containers.db_1: '_' is not allowed in a container name (machined rejects it);"
        " use '-' instead",
        f"{FILE}: containers.db_1.ephemeral: expected true or false, got an integer (1)",
    ]


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ('image = "debian"', 'containers.c.image: expected "host", a recipe (debian:SUITE, '
                             "ubuntu:SUITE), or an absolute path to a root directory or a "
                             ".tar, .tar.gz or .tar.zst archive, got 'debian'"),
        ('image = "arch:latest"', 'containers.c.image: expected "host", a recipe'),
        ('packages = ["nginx"]', "containers.c.packages: packages go into recipe images "
                                 "(debian:SUITE, ubuntu:SUITE); image 'host' is not one"),
        ('image = "debian:bookworm"\npackages = ["Nginx"]', "containers.c.packages[0]: expected "
                                                       "a package name such as nginx, got "
                                                       "'Nginx'"),
        ('image = "/srv/a,b"', "containers.c.image: ',', ':' and '\\' cannot be used in this "
                               "path, got '/srv/a,b'"),
        ("boot = false", "containers.c.command: boot = false needs a command to run"),
        ('command = ["x"]', "containers.c.command: a command is only run with boot = false"),
        ('command = "sh"', "containers.c.command: expected a list of strings, got a string"),
        ("command = [1]", "containers.c.command[0]: expected a string, got an integer (1)"),
        ('environment = { "1X" = "a" }', 'containers.c.environment.1X: expected a variable '
                                         "name"),
        ('environment = { X = "a\\nb" }', "containers.c.environment.X: control characters "
                                          "(newline, NUL, …) cannot be carried"),
        ('environment = { X = 1 }', "containers.c.environment.X: expected a string"),
        ('tmpfs = ["scratch"]', "containers.c.tmpfs[0]: expected an absolute path"),
        ('ephemeral-size = "lots"', "containers.c.ephemeral-size: expected a size"),
        ("timeout-start-sec = 0", "containers.c.timeout-start-sec: expected a positive number"),
        ('bind-mounts."/a" = { host-path = "/x\\ny" }', 'containers.c.bind-mounts."/a".host-path:'
                                                        " control characters"),
        ('bind-mounts."/a" = { readonly = true }', 'containers.c.bind-mounts."/a".readonly: '
                                                   "unknown key"),
        ('bind-mounts."/a/../etc" = {}', 'containers.c.bind-mounts."/a/../etc".mount-point: '
                                         "'..' is not allowed"),
        ('bind-mounts = ["/a"]', "containers.c.bind-mounts: expected a table keyed by mount "
                                 "point"),
    ],
)  # fmt: skip
def test_bad_values(toml: str, message: str) -> None:
    found = errors(f"[containers.c]\n{toml}\n")
    assert len(found) == 1, found
    assert found[0].startswith(f"{FILE}: {message}"), found[0]


def test_bad_host_table() -> None:
    found = errors('[host]\nbackend = "docker"\nstate-dir = "var"\ncolour = 1\n')
    assert found == [
        f"{FILE}: host.colour: unknown key",
        f"{FILE}: host.backend: expected one of auto, systemd, direct, got a string ('docker')",
        f"{FILE}: host.state-dir: expected an absolute path, got 'var'",
    ]


def test_invalid_toml_and_encoding() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(b"[containers.web\n", FILE)
    assert str(info.value.diagnostics[0]).startswith(f"{FILE}: invalid TOML: ")
    with pytest.raises(ConfigError) as info:
        parse_config(b"[containers.w\xff]\n", FILE)
    assert str(info.value.diagnostics[0]) == f"{FILE}: not UTF-8 (byte 13)"


def test_config_path_precedence() -> None:
    assert config_path("/a.toml", {"COVE_CONFIG": "/b.toml"}) == "/a.toml"
    assert config_path(None, {"COVE_CONFIG": "/b.toml"}) == "/b.toml"
    assert config_path(None, {}) == "/etc/cove/cove.toml"


def test_cli_reports_config_errors_with_exit_2(tmp_path) -> None:  # type: ignore[no-untyped-def]
    bad = tmp_path / "cove.toml"
    bad.write_text("[containers.web_1]\n[containers.ok]\nboot = 3\n")
    result = subprocess.run(
        [sys.executable, "-m", "cove", "--config", str(bad), "list"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert f"{bad}: containers.web_1: '_' is not allowed" in result.stderr
    assert f"{bad}: containers.ok.boot: expected true or false" in result.stderr
    assert result.stdout == ""


def test_missing_config_file_is_a_usage_error(tmp_path) -> None:  # type: ignore[no-untyped-def]
    result = subprocess.run(
        [sys.executable, "-m", "cove", "--config", str(tmp_path / "nope.toml"), "list"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert "nope.toml: no such config file" in result.stderr


def test_security_and_lifecycle_keys_parse() -> None:
    c = parse("""
        [containers.c]
        auto-start = true
        restart-if-changed = false
        additional-capabilities = ["CAP_NET_ADMIN", "all"]
        allowed-devices = [{ node = "/dev/fuse", modifier = "rw" }, { node = "block-loop" }]
        enable-tun = true
        private-users = "pick"
        copy-resolv-conf = false
        extra-flags = ["--setenv=A=b c", "--bind-ro=/srv/x:/x", "-E", "--property=CPUQuota=5%"]
        """).containers["c"]
    assert (c.auto_start, c.restart_if_changed, c.enable_tun, c.copy_resolv_conf) == (
        True, False, True, False,
    )  # fmt: skip
    assert c.additional_capabilities == ("CAP_NET_ADMIN", "all")
    assert c.allowed_devices == (
        AllowedDevice("/dev/fuse", "rw"),
        AllowedDevice("block-loop", "rwm"),
    )
    assert c.private_users == "pick"
    assert c.extra_flags == (
        "--setenv=A=b c",
        "--bind-ro=/srv/x:/x",
        "-E",
        "--property=CPUQuota=5%",
    )
    assert parse("[containers.c]\nprivate-users = 524288\n").containers["c"].private_users == (
        "524288"
    )


def test_new_keys_default_as_nixos() -> None:
    c = parse("[containers.web]\n").containers["web"]
    assert (c.auto_start, c.restart_if_changed, c.enable_tun, c.copy_resolv_conf) == (
        False, True, False, True,
    )  # fmt: skip
    assert (c.additional_capabilities, c.allowed_devices, c.extra_flags) == ((), (), ())
    assert c.private_users == "no"


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ('additional-capabilities = ["NET_ADMIN"]', "containers.c.additional-capabilities[0]: "
         "expected a capability name such as CAP_NET_ADMIN, or all, got 'NET_ADMIN'; did you "
         "mean 'CAP_NET_ADMIN'?"),
        ('additional-capabilities = ["CAP_FLY"]', "containers.c.additional-capabilities[0]: "
         "expected a capability name"),
        ('allowed-devices = [{ node = "/dev/fuse", modifier = "rwx" }]',
         "containers.c.allowed-devices[0].modifier: expected a combination of r, w and m, got "
         "'rwx'"),
        ('allowed-devices = [{ node = "/dev/fuse", modifier = "rr" }]',
         "containers.c.allowed-devices[0].modifier: expected a combination of r, w and m"),
        ('allowed-devices = [{ node = "fuse" }]', "containers.c.allowed-devices[0].node: "
         "expected a device path under /dev/ or char-NAME / block-NAME, got 'fuse'"),
        ('allowed-devices = [{ modifier = "r" }]', "containers.c.allowed-devices[0].node: "
         "missing; expected a device path such as /dev/fuse"),
        ('allowed-devices = [{ node = "/dev/a", mode = "r" }]',
         "containers.c.allowed-devices[0].mode: unknown key; expected node, modifier"),
        ('allowed-devices = "/dev/fuse"', "containers.c.allowed-devices: expected a list of "
         "{ node, modifier }"),
        ('private-users = "yes"', 'containers.c.private-users: expected "no", "identity", '
         '"pick" or a first UID from 0 to 4294901760, got a string (\'yes\')'),
        ("private-users = -1", "containers.c.private-users: expected"),
        ("private-users = true", "containers.c.private-users: expected"),
        ('extra-flags = ["--bind", "/a:/b"]', "containers.c.extra-flags[1]: expected a "
         "systemd-nspawn option such as --option=value, got '/a:/b'"),
        ('extra-flags = ["--machine=other"]', "containers.c.extra-flags[0]: --machine is set "
         "by cove; use the container's name instead"),
        ('extra-flags = ["-D/srv/x"]', "containers.c.extra-flags[0]: -D is set by cove; "
         "use image instead"),
        ('extra-flags = ["--capability=CAP_X"]', "containers.c.extra-flags[0]: --capability is "
         "set by cove; use additional-capabilities instead"),
        ('extra-flags = ["--x\\ny"]', "containers.c.extra-flags[0]: control characters"),
        ('auto-start = "yes"', "containers.c.auto-start: expected true or false"),
        ("copy-resolv-conf = 0", "containers.c.copy-resolv-conf: expected true or false"),
    ],
)  # fmt: skip
def test_bad_security_values(toml: str, message: str) -> None:
    found = errors(f"[containers.c]\n{toml}\n")
    assert len(found) == 1, found
    assert found[0].startswith(f"{FILE}: {message}"), found[0]


def test_cli_help_global_options_and_closed_pipes(tmp_path) -> None:  # type: ignore[no-untyped-def]
    cove = [sys.executable, "-m", "cove"]
    helped = subprocess.run([*cove, "--help"], capture_output=True, text=True, check=True)
    assert "render" in helped.stdout
    assert "__exec" not in helped.stdout
    assert "__hook" not in helped.stdout
    config = tmp_path / "cove.toml"
    config.write_text("".join(f"[containers.c{i}]\n" for i in range(200)))
    after = subprocess.run([*cove, "list", "--config", str(config), "--json"], capture_output=True)
    assert after.returncode == 0, after.stderr
    # A reader that goes away early: no traceback.
    render = subprocess.Popen([*cove, "--config", str(config), "render"], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE)  # fmt: skip
    assert render.stdout is not None and render.stderr is not None
    render.stdout.readline()
    render.stdout.close()
    assert render.wait(timeout=30) == 141
    assert render.stderr.read() == b""
    broken = tmp_path / "broken.toml"
    broken.write_text("[x\n")
    syntax = subprocess.run([*cove, "--config", str(broken), "list"], capture_output=True,
                            text=True)  # fmt: skip
    assert syntax.returncode == 2
    assert "invalid TOML" in syntax.stderr
    assert "hint" not in syntax.stderr


def test_files_parse_and_errors() -> None:
    c = parse('[containers.c]\nfiles = { "/etc/motd" = "hi\\n", "/etc/a b" = "" }\n')
    assert c.containers["c"].files == (("/etc/a b", ""), ("/etc/motd", "hi\n"))
    found = errors("""
        [containers.c]
        files = { "etc/x" = "a", "/proc/x" = "a", "/etc/" = "a", "/etc/y" = 1, "/usr/z" = "a" }
        """)
    assert found == [
        f"{FILE}: containers.c.files.\"etc/x\": expected an absolute path, got 'etc/x'",
        f'{FILE}: containers.c.files."/proc/x": proc is mounted over at start; a file there '
        "would be hidden",
        f"{FILE}: containers.c.files.\"/etc/\": expected the path of a file, got '/etc/'",
        f'{FILE}: containers.c.files."/etc/y": expected the file\'s content as a string, got an '
        "integer (1)",
    ]
    host_usr = errors('[containers.c]\nfiles = { "/usr/z" = "a" }\n')
    assert host_usr == [
        f"{FILE}: containers.c.files.\"/usr/z\": the host image's /usr is the host's own, "
        "read-only; write the file elsewhere"
    ]


def test_recipe_images_and_their_identity() -> None:
    from cove.recipes import identity

    c = parse("""
        [containers.web]
        image = "debian:bookworm"
        packages = ["nginx", "curl"]
        """).containers["web"]
    assert (c.image, c.packages) == ("debian:bookworm", ("nginx", "curl"))
    same = identity("debian", "bookworm", ("curl", "nginx", "curl"))
    assert identity("debian", "bookworm", c.packages) == same
    assert same.startswith("debian-bookworm-") and len(same) == len("debian-bookworm-") + 16
    others = {
        identity("debian", "trixie", c.packages),
        identity("debian", "bookworm", ("nginx",)),
        identity("debian", "bookworm", c.packages, mirror="http://mirror.invalid/debian"),
        identity("ubuntu", "bookworm", c.packages),
    }
    assert same not in others and len(others) == 4


def test_address_pool_key() -> None:
    assert parse('[host]\naddress-pool = "10.50.0.0/20"\n').host.address_pool == "10.50.0.0/20"
    assert errors('[host]\naddress-pool = "10.50.0.0/25"\n') == [
        f"{FILE}: host.address-pool: expected a network of at least a /24, got '10.50.0.0/25'"
    ]
    assert errors('[host]\naddress-pool = "fc00::/64"\n')[0].startswith(
        f"{FILE}: host.address-pool: expected an IPv4 network"
    )


def test_recipe_build_plan() -> None:
    from cove.recipes import recipe_of

    host = parse('[host]\nubuntu-mirror = "http://mirror.invalid/ubuntu"\n').host
    recipe = recipe_of("ubuntu:noble", ("nginx", "curl", "nginx"), host.mirrors)
    assert recipe is not None
    assert recipe.label == "ubuntu:noble + curl, nginx"
    assert recipe.debootstrap_argv("/tmp/x") == [
        "debootstrap", "--variant=minbase", "--include=curl,dbus,nginx,systemd,systemd-sysv",
        "--keyring=/usr/share/keyrings/ubuntu-archive-keyring.gpg", "noble", "/tmp/x",
        "http://mirror.invalid/ubuntu",
    ]  # fmt: skip
    default = recipe_of("ubuntu:noble", ("nginx", "curl"), parse("").host.mirrors)
    assert default is not None and default.mirror == "http://archive.ubuntu.com/ubuntu"
    assert default.identity != recipe.identity, "the mirror is part of the identity"
    assert errors('[host]\ndebian-mirror = "ftp://x y"\n')[0].startswith(
        f"{FILE}: host.debian-mirror: expected an http(s):// or file:// URL"
    )
