"""Recipe images for real: built once by debootstrap into the store (cached on the machine),
then booted."""

from __future__ import annotations

import pytest

from tests.conftest import CACHE, Host

pytestmark = pytest.mark.e2e

STORE = f'image-dir = "{CACHE}/images"\n'


def test_two_containers_boot_from_one_debian_image(cove_host: Host) -> None:
    keep, scratch = cove_host.name("keep"), cove_host.name("scratch")
    cove_host.write(
        f"""
        [containers.{keep}]
        image = "debian:bookworm"
        [containers.{scratch}]
        image = "debian:bookworm"
        ephemeral = true
        """,
        host=STORE,
    )
    started = cove_host.cove("start", keep, scratch, timeout=900, check=True)
    assert f"{keep}: started" in started.stdout and f"{scratch}: started" in started.stdout
    for name in (keep, scratch):
        running = cove_host.cove("run", name, "--", "systemctl", "is-system-running")
        assert running.stdout == "running\n", cove_host.log(name)[-2000:]
        failed = cove_host.cove("run", name, "--", "systemctl", "--failed", "--no-legend")
        assert failed.stdout == ""
        release = cove_host.cove("run", name, "--", "cat", "/etc/os-release").stdout
        assert "VERSION_CODENAME=bookworm" in release
    ids = {cove_host.cove("run", n, "--", "cat", "/etc/machine-id").stdout for n in (keep, scratch)}
    assert len(ids) == 2
    debs = cove_host.cove("run", keep, "--", "sh", "-c", "ls /var/cache/apt/archives/*.deb")
    assert debs.returncode != 0, "no cached packages in the image"

    for name in (keep, scratch):
        cove_host.cove("run", name, "--", "sh", "-c", "echo mine > /root/file", check=True)
    cove_host.cove("restart", keep, scratch, check=True)
    assert cove_host.cove("run", keep, "--", "cat", "/root/file").stdout == "mine\n"
    assert cove_host.cove("run", scratch, "--", "cat", "/root/file").returncode == 1
    cove_host.cove("stop", keep, scratch, check=True)

    listed = cove_host.cove("image", "build", keep, check=True).stdout
    assert listed.startswith("debian:bookworm: ") and f"{CACHE}/images/debian-bookworm-" in listed
