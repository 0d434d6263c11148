"""Container options beyond the first slice, on real containers (direct backend)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import Host
from tests.test_e2e_busybox import app

pytestmark = pytest.mark.e2e

CAP_SYS_TIME = 25


def _effective_caps(host: Host, name: str) -> int:
    status = host.cove("run", name, "--", "cat", "/proc/2/status", check=True).stdout
    line = next(x for x in status.splitlines() if x.startswith("CapEff:"))
    return int(line.split()[1], 16)


def test_extra_flags_and_capabilities_reach_the_command(
    cove_host: Host, busybox_image: Path
) -> None:
    plain, extra = cove_host.name("plain"), cove_host.name("extra")
    cove_host.write(
        app(cove_host, "plain", busybox_image)
        + app(cove_host, "extra", busybox_image, """
        additional-capabilities = ["CAP_SYS_TIME"]
        extra-flags = ["--setenv=GREETING=hello world", "--hostname=elsewhere"]
        """)
    )  # fmt: skip
    cove_host.cove("start", plain, extra, check=True)
    assert not _effective_caps(cove_host, plain) & (1 << CAP_SYS_TIME)
    assert _effective_caps(cove_host, extra) & (1 << CAP_SYS_TIME)
    environ = cove_host.cove("run", extra, "--", "cat", "/proc/2/environ", check=True).stdout
    assert "GREETING=hello world" in environ.split("\0")
    hostname = cove_host.cove("run", extra, "--", "hostname", check=True).stdout
    assert hostname == "elsewhere\n"


def test_copy_resolv_conf(cove_host: Host, busybox_image: Path) -> None:
    copied, bare = cove_host.name("dns"), cove_host.name("nodns")
    cove_host.write(
        app(cove_host, "dns", busybox_image, "ephemeral = true")
        + app(cove_host, "nodns", busybox_image, "ephemeral = true\ncopy-resolv-conf = false")
    )
    cove_host.cove("start", copied, bare, check=True)
    inside = cove_host.cove("run", copied, "--", "cat", "/etc/resolv.conf", check=True).stdout
    assert inside == Path("/etc/resolv.conf").read_text()
    missing = cove_host.cove("run", bare, "--", "cat", "/etc/resolv.conf")
    assert missing.returncode == 1


@pytest.mark.parametrize(
    ("keys", "named"),
    [
        ('allowed-devices = [{ node = "/dev/fuse" }]', "allowed-devices"),
        ("enable-tun = true", "enable-tun"),
        ('enable-tun = true\nprivate-users = "identity"', "enable-tun"),
    ],
)
def test_keys_without_a_runtime_refuse_to_start(
    cove_host: Host, busybox_image: Path, keys: str, named: str
) -> None:
    name = cove_host.name("later")
    cove_host.write(app(cove_host, "later", busybox_image, keys))
    before = cove_host.snapshot()
    result = cove_host.cove("start", name)
    assert result.returncode == 1
    assert result.stderr.splitlines()[0] == f"cove: cannot start {name}: not supported yet: {named}"
    assert before.difference(cove_host.snapshot()) == {}
    assert not (cove_host.root / "log").exists()
    # render still shows what the keys will do
    assert cove_host.cove("render", name).returncode == 0


def test_files_are_written_at_every_start_and_never_through_a_symlink(
    cove_host: Host, busybox_image: Path
) -> None:
    name = cove_host.name("files")
    victim = cove_host.root / "victim"
    victim.write_text("host data\n")
    victim_dir = cove_host.root / "victim-dir"
    victim_dir.mkdir()
    cove_host.write(
        app(cove_host, "files", busybox_image, """
        files = { "/etc/motd" = "hello\\nworld 100% $HOME\\n", "/srv/new dir/conf" = "x=1" }
        """)
    )  # fmt: skip
    cove_host.cove("start", name, check=True)
    motd = cove_host.cove("run", name, "--", "cat", "/etc/motd", check=True).stdout
    assert motd == "hello\nworld 100% $HOME\n"
    conf = cove_host.cove("run", name, "--", "cat", "/srv/new dir/conf", check=True).stdout
    assert conf == "x=1"
    assert not (busybox_image / "etc/motd").exists(), "the image stays untouched"

    # The guest replaces the file with a link to a host path: the next start replaces the link.
    cove_host.cove("run", name, "--", "ln", "-sf", str(victim), "/etc/motd", check=True)
    cove_host.cove("restart", name, check=True)
    assert cove_host.cove("run", name, "--", "cat", "/etc/motd").stdout.startswith("hello")
    assert victim.read_text() == "host data\n"

    # A directory on the way turned into a link: the start fails, nothing is written.
    cove_host.cove("run", name, "--", "sh", "-c", f"rm -r '/srv/new dir' && ln -s {victim_dir} "
                   "'/srv/new dir'", check=True)  # fmt: skip
    cove_host.cove("stop", name, check=True)
    failed = cove_host.cove("start", name)
    assert failed.returncode == 1
    assert "files: cannot write /srv/new dir/conf: /srv/new dir is not a plain directory" in (
        failed.stderr
    )
    assert list(victim_dir.iterdir()) == []
    assert cove_host.cove("status", name).stdout == "down\n"
