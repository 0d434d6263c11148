"""The ephemeral root's promises on real containers: its size limit is the guest's ENOSPC and
nothing else, and a guest reboot starts from an empty root again."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.conftest import Host
from tests.test_e2e_busybox import app

pytestmark = pytest.mark.e2e


def test_filling_the_ephemeral_root_gives_the_guest_enospc_only(
    cove_host: Host, busybox_image: Path
) -> None:
    name = cove_host.name("full")
    cove_host.write(
        app(cove_host, "full", busybox_image, extra='ephemeral = true\nephemeral-size = "8M"')
    )
    before = cove_host.snapshot()
    cove_host.cove("start", name, check=True)
    fill = cove_host.cove(
        "run", name, "--", "dd", "if=/dev/zero", "of=/root/big", "bs=1M", "count=64"
    )
    assert fill.returncode != 0
    assert "No space left on device" in fill.stderr
    size = cove_host.cove("run", name, "--", "sh", "-c", "wc -c < /root/big").stdout
    assert int(size) <= 8 * 2**20
    # The guest goes on: it can still free space and write again.
    cove_host.cove("run", name, "--", "rm", "/root/big", check=True)
    cove_host.cove("run", name, "--", "sh", "-c", "echo ok > /root/small", check=True)
    assert cove_host.cove("status", name, check=True).stdout == "up\n"
    cove_host.cove("stop", name, check=True)
    assert cove_host.snapshot() == before


def test_a_guest_reboot_starts_again_from_an_empty_root(
    cove_host: Host, busybox_image: Path
) -> None:
    shared = cove_host.root / "shared"
    shared.mkdir()
    name = cove_host.name("reboot")
    # First boot: leave a mark in the root and reboot (the reboot system call, as systemd makes
    # it; nspawn then exits 133).
    # Second boot: say whether the mark survived, then stay up.
    script = (
        "echo boot >> /shared/boots; "
        "[ -e /root/mark ] && echo dirty >> /shared/boots; "
        "touch /root/mark; "
        "[ $(wc -l < /shared/boots) -lt 2 ] && reboot -f; "
        "exec sleep 1000"
    )
    cove_host.write(
        app(
            cove_host,
            "reboot",
            busybox_image,
            extra=f"""ephemeral = true
            [containers.{name}.bind-mounts."/shared"]
            host-path = "{shared}"
            is-read-only = false
            """,
            command=json.dumps(["/bin/sh", "-c", script]),
        )
    )
    cove_host.cove("start", name, check=True)
    boots = shared / "boots"  # ready means the command started, not that it wrote yet
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and (
        not boots.exists() or boots.read_text().count("boot") < 2
    ):
        time.sleep(0.05)
    assert (shared / "boots").read_text() == "boot\nboot\n"  # no "dirty": the root was empty
    status = json.loads(cove_host.cove("status", name, "--json", check=True).stdout)
    assert status["state"] == "up"
    assert "guest asked for a reboot; starting it again" in cove_host.log(name)
    cove_host.cove("stop", name, check=True)


def test_a_crashing_command_is_started_again_five_times_in_ten_seconds_at_most(
    cove_host: Host, busybox_image: Path
) -> None:
    shared = cove_host.root / "shared"
    shared.mkdir()
    name = cove_host.name("crash")
    cove_host.write(
        app(
            cove_host,
            "crash",
            busybox_image,
            extra=f"""
            [containers.{name}.bind-mounts."/shared"]
            host-path = "{shared}"
            is-read-only = false
            """,
            command=json.dumps(["/bin/sh", "-c", "echo run >> /shared/runs; sleep 0.2; exit 1"]),
        )
    )
    cove_host.cove("start", name, check=True)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and cove_host.cove("status", name).stdout != "down\n":
        time.sleep(0.1)
    assert cove_host.cove("status", name).stdout == "down\n"
    assert (shared / "runs").read_text() == "run\n" * 5  # as systemd's default start limit
    log = cove_host.log(name)
    assert log.count("container exited with status 1; starting it again") == 4
    assert "started 5 times within 10s, giving up" in log


def test_a_clean_exit_and_a_user_stop_are_never_restarted(
    cove_host: Host, busybox_image: Path
) -> None:
    name, other = cove_host.name("done"), cove_host.name("asked")
    cove_host.write(
        app(cove_host, "done", busybox_image, command='["/bin/sh", "-c", "sleep 0.3"]')
        + app(cove_host, "asked", busybox_image, extra="timeout-stop-sec = 1")
    )
    cove_host.cove("start", name, other, check=True)
    cove_host.cove("terminate", other, check=True)
    time.sleep(1.5)
    assert cove_host.cove("status", name).stdout == "down\n"
    assert cove_host.cove("status", other).stdout == "down\n"
    assert "starting it again" not in cove_host.log(name) + cove_host.log(other)
