"""The launch-first start: a card written by a normal start, used by the next one while the
file is unchanged, and a normal start for anything else."""

from __future__ import annotations

import json
import marshal
import os
import stat
import time
from pathlib import Path

import pytest

from cove import quickstart
from cove.quickstart import LAUNCHED_FROM_CARD
from tests.conftest import Host

SLEEPER = '["/bin/sh", "-c", "exec sleep 1000"]'


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["start", "web"], ("/etc/cove/cove.toml", "web")),
        (["--config", "/x/c.toml", "start", "web"], ("/x/c.toml", "web")),
        (["--config=/x/c.toml", "start", "web"], ("/x/c.toml", "web")),
        (["start", "web", "--config", "/x/c.toml"], ("/x/c.toml", "web")),
        (["start", "--config=/x/c.toml", "web"], ("/x/c.toml", "web")),
        (["start", "web", "--config"], None),
        (["--config", "/a", "start", "web", "--config", "/b"], None),
        (["start", "web", "db"], None),
        (["start", "--debug", "web"], None),
        (["--debug", "start", "web"], None),
        (["stop", "web"], None),
        (["start"], None),
        ([], None),
    ],
)
def test_only_a_plain_start_of_one_container_takes_the_card(
    argv: list[str], expected: tuple[str, str] | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("COVE_CONFIG", raising=False)
    assert quickstart._request(argv) == expected


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--config=/x/c.toml", "__hook", "pre-start", "web"], ("/x/c.toml", "web")),
        (["__hook", "pre-start", "web"], ("/etc/cove/cove.toml", "web")),
        (["--config=/x/c.toml", "__hook", "post-stop", "web"], None),
        (["--config=/x/c.toml", "__hook", "pre-start"], None),
        (["--config=/x/c.toml", "__hook", "pre-start", "--debug"], None),
        (["--debug", "--config=/x/c.toml", "__hook", "pre-start", "web"], None),
        (["start", "web"], None),
    ],
)
def test_only_a_units_pre_start_hook_takes_a_unit_card(
    argv: list[str], expected: tuple[str, str] | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("COVE_CONFIG", raising=False)
    assert quickstart._hook_request(argv) == expected


def test_what_nspawn_says_on_its_notify_socket() -> None:
    said = b"STATUS=Container running.\nX_NSPAWN_LEADER_PID=4242\nREADY=1\nREADY=0x\n"
    assert quickstart.notice(said) == (4242, True, ["Container running."])
    assert quickstart.notice(b"X_NSPAWN_LEADER_PID=12ab\nREADY=0\n") == (None, False, [])
    assert quickstart.notice(b"STATUS=a=b\n\xff") == (None, False, ["a=b"])


def test_cards_of_two_files_have_two_paths() -> None:
    assert quickstart.card_path("/a/cove.toml", "web") != quickstart.card_path(
        "/b/cove.toml", "web"
    )
    assert quickstart.card_path("/a/cove.toml", "web").startswith(quickstart.CARD_DIR + "/")


def declare(host: Host, name: str, image: Path, extra: str = "") -> None:
    host.write(f"""
        [containers.{name}]
        image = "{image}"
        boot = false
        command = {SLEEPER}
        ephemeral = true
        {extra}
        """)


def card_of(host: Host, name: str) -> Path:
    return Path(quickstart.card_path(str(host.config), name))


def start_stop(host: Host, name: str) -> tuple[bool, dict[str, object]]:
    """Start, check it runs, stop: (was it launched from its card, its status)."""
    assert host.cove("start", name, check=True).stdout.startswith(f"{name}: started (leader PID")
    status = json.loads(host.cove("status", name, "--json", check=True).stdout)
    ran = host.cove("run", name, "--", "cat", "/usr/lib/os-release")
    assert ran.returncode == 0 and "busybox" in ran.stdout
    carded = LAUNCHED_FROM_CARD in host.log(name)
    assert host.cove("stop", name, check=True).stdout == f"{name}: stopped\n"
    return carded, status


@pytest.mark.e2e
def test_second_start_uses_the_card_and_leaves_nothing(cove_host: Host, busybox_image: Path):
    name = cove_host.name("quick")
    declare(cove_host, name, busybox_image)
    before = cove_host.snapshot()

    carded, _ = start_stop(cove_host, name)
    assert not carded
    card = card_of(cove_host, name)
    assert stat.S_IMODE(card.stat().st_mode) == 0o600
    assert stat.S_IMODE(os.stat(quickstart.CARD_DIR).st_mode) == 0o700
    assert cove_host.snapshot() == before

    carded, status = start_stop(cove_host, name)
    assert carded
    assert status["state"] == "up" and status["leader"]
    assert cove_host.snapshot() == before

    # A second start while it runs is still "already running", through the normal path.
    cove_host.cove("start", name, check=True)
    again = cove_host.cove("start", name, check=True)
    assert again.stdout.startswith(f"{name}: already running")
    cove_host.cove("stop", name, check=True)
    assert cove_host.snapshot() == before


@pytest.mark.e2e
def test_a_changed_file_is_started_the_normal_way(cove_host: Host, busybox_image: Path):
    name = cove_host.name("edit")
    declare(cove_host, name, busybox_image)
    start_stop(cove_host, name)
    time.sleep(0.01)  # a new mtime even on coarse clocks
    declare(cove_host, name, busybox_image, 'environment = { GREETING = "changed" }')

    carded, _ = start_stop(cove_host, name)
    assert not carded  # the card was of the old file
    cove_host.cove("start", name, check=True)
    greeting = cove_host.cove("run", name, "--", "sh", "-c", "echo $GREETING")
    cove_host.cove("stop", name, check=True)
    assert greeting.stdout == "changed\n"


@pytest.mark.e2e
def test_a_launch_that_fails_is_reported_and_cleaned_up(cove_host: Host, busybox_image: Path):
    name = cove_host.name("bad")
    declare(cove_host, name, busybox_image)
    before = cove_host.snapshot()
    start_stop(cove_host, name)
    card_file = card_of(cove_host, name)
    card = marshal.loads(card_file.read_bytes())
    # What no render produces: nspawn refuses it and exits before the guest is ready.
    card["argv"] = [card["argv"][0], "--no-such-option", *card["argv"][1:]]
    card_file.write_bytes(marshal.dumps(card))

    failed = cove_host.cove("start", name)
    assert failed.returncode == 1
    assert f"cove: {name} failed to start: systemd-nspawn exited with status 1" in failed.stderr
    assert "no-such-option" in failed.stderr  # the guest's last output
    assert cove_host.snapshot() == before


@pytest.mark.e2e
def test_destroy_and_a_dropped_container_remove_cards(cove_host: Host, busybox_image: Path):
    keep, drop = cove_host.name("keep"), cove_host.name("drop")
    declare(cove_host, keep, busybox_image)
    start_stop(cove_host, keep)
    assert card_of(cove_host, keep).exists()
    cove_host.write("")
    assert cove_host.cove("destroy", keep, check=True).stdout == f"{keep}: destroyed\n"  # logs
    assert not card_of(cove_host, keep).exists()

    declare(cove_host, drop, busybox_image)
    start_stop(cove_host, drop)
    declare(cove_host, keep, busybox_image)
    start_stop(cove_host, keep)
    assert card_of(cove_host, keep).exists() and not card_of(cove_host, drop).exists()


@pytest.mark.e2e
def test_a_booted_host_image_container_starts_from_its_card(cove_host: Host) -> None:
    name = cove_host.name("hostq")
    cove_host.write(f"[containers.{name}]\nephemeral = true\n")
    before = cove_host.snapshot()
    for carded in (False, True):
        cove_host.cove("start", name, check=True)
        state = cove_host.cove("run", name, "--", "systemctl", "is-system-running")
        assert state.stdout == "running\n"
        assert cove_host.cove("run", name, "--", "hostname").stdout == f"{name}\n"
        assert (LAUNCHED_FROM_CARD in cove_host.log(name)) is carded
        cove_host.cove("stop", name, check=True)
    assert cove_host.snapshot() == before

    # A card made for another generated root (the host's /etc changed since) is not used.
    card_file = card_of(cove_host, name)
    card = marshal.loads(card_file.read_bytes())
    card["host_key"] = "0" * 16
    card_file.write_bytes(marshal.dumps(card))
    cove_host.cove("start", name, check=True)
    assert LAUNCHED_FROM_CARD not in cove_host.log(name)
    cove_host.cove("stop", name, check=True)
    assert marshal.loads(card_file.read_bytes())["host_key"] != "0" * 16
