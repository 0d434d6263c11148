"""A corpus of hostile and broken inputs. Each is refused with exit 2 and a message naming the
file and the key, and the host is left as it was: no state, runtime or log directory, no
cgroup, no network namespace (cove is asked to start the container, so anything it would make
before checking would show)."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import textwrap
from pathlib import Path

import pytest

from tests.conftest import COVE

C = "[containers.c]\n"
CMD = 'boot = false\ncommand = ["/bin/true"]\n'
NET = 'private-network = true\nhost-address = "10.1.0.1"\n'
FWD = NET + 'local-address = "10.1.0.2"\n'
INJECT = "\\n[Service]\\nExecStartPre=/bin/touch /tmp/pwned"

CASES: list[tuple[str, str, str]] = [
    # (id, what follows the [host] table, what the message must name)
    ("name-empty", '[containers.""]\n', 'containers."": a container name cannot be empty'),
    ("name-65", f"[containers.{'a' * 65}]\n", "at most 64 characters"),
    ("name-underscore", "[containers.a_b]\n", "containers.a_b: '_' is not allowed"),
    ("name-dotdot", '[containers.".."]\n', 'containers."..": a container name uses only'),
    ("name-slash", '[containers."a/b"]\n', 'containers."a/b": a container name uses only'),
    ("name-unicode", '[containers."wéb"]\n', 'containers."wéb": a container name uses only'),
    ("name-dash", '[containers."-web"]\n', "containers.-web: a container name uses only"),
    ("name-upper", "[containers.Web]\n", "containers.Web: a container name uses only"),
    ("name-space", '[containers."a b"]\n', 'containers."a b": a container name uses only'),
    ("name-newline", '[containers."a\\nb"]\n', "a container name uses only"),
    ("image-relative", C + 'image = "srv/root"\n', "containers.c.image"),
    ("image-newline", C + f'image = "/srv{INJECT}"\n', "containers.c.image"),
    ("image-colon", C + 'image = "/srv/a:b"\n', "containers.c.image"),
    ("image-comma", C + 'image = "/srv/a,b"\n', "containers.c.image"),
    ("image-unknown-recipe", C + 'image = "gentoo:latest"\n', "containers.c.image"),
    (
        "bind-relative-source",
        C + '[containers.c.bind-mounts."/data"]\nhost-path = "data"\n',
        'containers.c.bind-mounts."/data".host-path',
    ),
    (
        "bind-relative-target",
        C + '[containers.c.bind-mounts."data"]\nhost-path = "/srv"\n',
        "containers.c.bind-mounts.data",
    ),
    (
        "bind-newline",
        C + f'[containers.c.bind-mounts."/d"]\nhost-path = "/srv{INJECT}"\n',
        'containers.c.bind-mounts."/d".host-path',
    ),
    (
        "bind-target-newline",
        C + f'[containers.c.bind-mounts."/d{INJECT}"]\nhost-path = "/srv"\n',
        "containers.c.bind-mounts",
    ),
    (
        "bind-dotdot",
        C + '[containers.c.bind-mounts."/d"]\nhost-path = "/srv/../etc"\n',
        'containers.c.bind-mounts."/d".host-path',
    ),
    (
        "bind-missing-source",
        C + '[containers.c.bind-mounts."/d"]\nhost-path = "/no/such/dir"\n',
        "/no/such/dir does not exist",
    ),
    ("tmpfs-relative", C + 'tmpfs = ["scratch"]\n', "containers.c.tmpfs[0]"),
    ("tmpfs-newline", C + f'tmpfs = ["/x{INJECT}"]\n', "containers.c.tmpfs[0]"),
    ("files-relative", C + '[containers.c.files]\n"etc/motd" = "x"\n', "containers.c.files"),
    ("files-proc", C + '[containers.c.files]\n"/proc/x" = "x"\n', "containers.c.files"),
    ("files-dotdot", C + '[containers.c.files]\n"/etc/../../x" = "x"\n', "containers.c.files"),
    ("env-newline", C + f'environment = {{ A = "x{INJECT}" }}\n', "containers.c.environment"),
    ("env-equals-key", C + 'environment = { "A=B" = "x" }\n', "containers.c.environment"),
    ("env-nul", C + 'environment = { A = "x\\u0000y" }\n', "containers.c.environment"),
    ("env-empty-key", C + 'environment = { "" = "x" }\n', "containers.c.environment"),
    ("env-digit-key", C + 'environment = { 1A = "x" }\n', "containers.c.environment"),
    (
        "cmd-newline",
        C + f'boot = false\ncommand = ["/bin/sh", "x{INJECT}"]\n',
        "containers.c.command[1]",
    ),
    ("cmd-empty", C + "boot = false\ncommand = []\n", "containers.c.command"),
    ("cmd-not-list", C + 'boot = false\ncommand = "/bin/true"\n', "containers.c.command"),
    ("addr-256", C + NET + 'local-address = "10.0.0.256"\n', "containers.c.local-address"),
    (
        "addr-mapped",
        C + NET + 'local-address6 = "::ffff:10.0.0.1"\n',
        "containers.c.local-address6",
    ),
    ("addr-network", C + NET + 'local-address = "10.1.0.0/24"\n', "containers.c.local-address"),
    ("addr-prefix-33", C + NET + 'local-address = "10.1.0.2/33"\n', "containers.c.local-address"),
    (
        "addr-multicast",
        C + 'private-network = true\nhost-address = "224.0.0.1"\n' 'local-address = "10.1.0.2"\n',
        "containers.c.host-address",
    ),
    (
        "addr-zone",
        C + 'private-network = true\nhost-address6 = "fe80::1%eth0"\n',
        "containers.c.host-address6",
    ),
    ("addr-v6-in-v4", C + NET + 'local-address = "fd00::2"\n', "containers.c.local-address"),
    (
        "mac-multicast",
        C + FWD + 'local-mac-address = "01:00:00:00:00:01"\n',
        "containers.c.local-mac-address",
    ),
    ("mac-garbage", C + FWD + 'local-mac-address = "zz"\n', "containers.c.local-mac-address"),
    (
        "port-0",
        C + FWD + "forward-ports = [{ host-port = 0 }]\n",
        "containers.c.forward-ports[0].host-port",
    ),
    (
        "port-65536",
        C + FWD + "forward-ports = [{ host-port = 65536 }]\n",
        "containers.c.forward-ports[0].host-port",
    ),
    (
        "port-negative",
        C + FWD + "forward-ports = [{ host-port = -1 }]\n",
        "containers.c.forward-ports[0].host-port",
    ),
    (
        "port-string",
        C + FWD + 'forward-ports = [{ host-port = "80" }]\n',
        "containers.c.forward-ports[0].host-port",
    ),
    (
        "port-duplicate",
        C + FWD + "forward-ports = [{ host-port = 80 }, { host-port = 80 }]\n",
        "containers.c.forward-ports",
    ),
    (
        "port-protocol",
        C + FWD + 'forward-ports = [{ protocol = "sctp", host-port = 80 }]\n',
        "containers.c.forward-ports[0].protocol",
    ),
    (
        "port-container",
        C + FWD + "forward-ports = [{ host-port = 80, container-port = 70000 }]\n",
        "containers.c.forward-ports[0].container-port",
    ),
    (
        "bridge-inject",
        C + f'private-network = true\nhost-bridge = "br0{INJECT}"\n',
        "containers.c.host-bridge",
    ),
    (
        "interface-newline",
        C + 'private-network = true\ninterfaces = ["eth0\\n"]\n',
        "containers.c.interfaces[0]",
    ),
    (
        "caps-inject",
        C + f'additional-capabilities = ["CAP_NET_ADMIN{INJECT}"]\n',
        "containers.c.additional-capabilities[0]",
    ),
    (
        "caps-unknown",
        C + 'additional-capabilities = ["CAP_EVERYTHING"]\n',
        "containers.c.additional-capabilities[0]",
    ),
    ("size-inject", C + f'ephemeral-size = "1G{INJECT}"\n', "containers.c.ephemeral-size"),
    ("timeout-inject", C + f'timeout-stop-sec = "5{INJECT}"\n', "containers.c.timeout-stop-sec"),
    ("timeout-negative", C + "timeout-stop-sec = -5\n", "containers.c.timeout-stop-sec"),
    ("flags-inject", C + f'extra-flags = ["--setenv=A={INJECT}"]\n', "containers.c.extra-flags[0]"),
    ("flags-owned", C + 'extra-flags = ["--boot"]\n', "containers.c.extra-flags[0]"),
    ("flags-short", C + 'extra-flags = ["-b"]\n', "containers.c.extra-flags[0]"),
    (
        "device-escape",
        C + '[[containers.c.allowed-devices]]\nnode = "/dev/../etc/shadow"\n' 'modifier = "rw"\n',
        "containers.c.allowed-devices",
    ),
    (
        "device-modifier",
        C + '[[containers.c.allowed-devices]]\nnode = "/dev/net/tun"\n'
        'modifier = "rwx; rm -rf /"\n',
        "containers.c.allowed-devices",
    ),
    ("private-users", C + 'private-users = "maybe"\n', "containers.c.private-users"),
    ("boot-string", C + 'boot = "yes"\n', "containers.c.boot"),
    ("boot-and-command", C + 'command = ["/bin/true"]\n', "containers.c.command"),
    ("unknown-key", C + "ephemral = true\n", "containers.c.ephemral"),
    ("unknown-table", "[volumes.x]\n", "volumes: unknown table"),
    ("host-relative", "", "host.state-dir"),
    ("nat-without-uplink", C + FWD + "nat = true\n", "containers.c.nat"),
    ("invalid-toml", "[containers.c\n", "invalid TOML"),
]
HOST_OVERRIDES = {"host-relative": 'state-dir = "var/lib/cove"\n'}


def run_start(tmp_path: Path, body: bytes) -> subprocess.CompletedProcess[str]:
    config = tmp_path / "cove.toml"
    config.write_bytes(body)
    env = {**os.environ, "COVE_CONFIG": str(config)}
    return subprocess.run([*COVE, "start", "c"], capture_output=True, text=True, env=env)


def host_table(tmp_path: Path, extra: str = "") -> str:
    """The test's own places; `extra` lines replace the defaults of their keys."""
    own = {line.split("=")[0].strip() for line in extra.splitlines()}
    return (
        "".join(
            line + "\n"
            for line in textwrap.dedent(f"""\
        [host]
        backend = "direct"
        state-dir = "{tmp_path}/state"
        runtime-dir = "{tmp_path}/run"
        log-dir = "{tmp_path}/log"
        config-dir = "{tmp_path}/etc"
        cgroup = "cove-hostile-{_tag(tmp_path)}"
        """).splitlines()
            if line.split("=")[0].strip() not in own
        )
        + extra
    )


def _tag(tmp_path: Path) -> str:
    """Unique on the machine (tmp_path names repeat between parallel workers)."""
    tag = tmp_path / ".tag"
    if not tag.exists():
        tag.write_text(secrets.token_hex(4))
    return tag.read_text()


def assert_untouched(tmp_path: Path) -> None:
    made = sorted(p.name for p in tmp_path.iterdir() if p.name not in ("cove.toml", ".tag"))
    assert made == [], f"made {made}"
    assert not os.path.exists(f"/sys/fs/cgroup/unified/cove-hostile-{_tag(tmp_path)}")
    assert not os.path.exists("/tmp/pwned")


def test_the_corpus_is_large_enough() -> None:
    assert len(CASES) >= 60
    assert len({case for case, _, _ in CASES}) == len(CASES)


@pytest.mark.parametrize(("case", "body", "expected"), CASES, ids=[c[0] for c in CASES])
def test_hostile_input_is_refused_and_changes_nothing(
    tmp_path: Path, case: str, body: str, expected: str
) -> None:
    text = host_table(tmp_path, HOST_OVERRIDES.get(case, "")) + body
    result = run_start(tmp_path, text.encode())
    if result.returncode == 0:  # accepted after all: stop what it started, then fail
        env = {**os.environ, "COVE_CONFIG": str(tmp_path / "cove.toml")}
        subprocess.run([*COVE, "terminate", "c"], env=env, capture_output=True)
    assert result.returncode == 2, f"{case}: " + result.stdout + result.stderr
    assert expected in result.stderr, f"{case}: {result.stderr}"
    assert str(tmp_path / "cove.toml") in result.stderr  # the file is named
    assert_untouched(tmp_path)


def test_a_file_that_is_not_utf8(tmp_path: Path) -> None:
    result = run_start(
        tmp_path, host_table(tmp_path).encode() + b'[containers.c]\nimage = "\xff"\n'
    )
    assert result.returncode == 2
    assert f"{tmp_path / 'cove.toml'}: not UTF-8" in result.stderr
    assert_untouched(tmp_path)


def test_a_50_megabyte_file_is_refused_without_reading_it_all(tmp_path: Path) -> None:
    body = host_table(tmp_path).encode() + b"# padding\n" * (5 * 1024 * 1024)
    result = run_start(tmp_path, body)
    assert result.returncode == 2
    assert "is 50 MiB; cove reads config files of at most" in result.stderr, result.stderr
    assert_untouched(tmp_path)


def test_ten_thousand_containers_are_read_and_planned(tmp_path: Path) -> None:
    body = "".join(f"[containers.c{i}]\nephemeral = true\n" for i in range(10_000))
    config = tmp_path / "cove.toml"
    config.write_text(host_table(tmp_path) + body)
    env = {**os.environ, "COVE_CONFIG": str(config)}
    planned = subprocess.run([*COVE, "plan", "--json"], capture_output=True, text=True, env=env)
    assert planned.returncode == 0, planned.stderr
    assert planned.stdout.count('"action": "create"') == 10_000


@pytest.mark.parametrize(
    "value",
    ["/srv/with space", "/srv/50%", '/srv/quote"d', "/srv/colon:here", "/srv/back\\\\slash"],
)
def test_odd_but_legal_paths_are_carried_exactly(tmp_path: Path, value: str) -> None:
    """Bind-mount sources with spaces, %, quotes, ':' or '\\' reach nspawn as one word,
    escaped as nspawn reads them (the golden files pin the exact text)."""
    literal = value.replace("\\\\", "\\")
    body = C + CMD + f'[containers.c.bind-mounts."/d"]\nhost-path = {json.dumps(literal)}\n'
    config = tmp_path / "cove.toml"
    config.write_text(host_table(tmp_path) + body)
    env = {**os.environ, "COVE_CONFIG": str(config)}
    rendered = subprocess.run([*COVE, "render", "c"], capture_output=True, text=True, env=env)
    assert rendered.returncode == 0, rendered.stderr
    binds = [line for line in rendered.stdout.splitlines() if line.startswith("--bind-ro=")]
    assert len(binds) == 1
    escaped = literal.replace("\\", "\\\\").replace(":", "\\:")
    assert binds[0] == f"--bind-ro={escaped}:/d"
