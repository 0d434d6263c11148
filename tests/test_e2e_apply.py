"""cove plan / cove apply on real containers (direct backend)."""

from __future__ import annotations

import fcntl
import json
import os
import select
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import COVE, SLEEPER, Host, ip_json, sleeper

pytestmark = pytest.mark.e2e


def plan(host: Host, *args: str) -> list[tuple[str, str, list[str]]]:
    data = json.loads(host.cove("plan", "--json", *args, check=True).stdout)
    return [(a["name"], a["action"], a["keys"]) for a in data["actions"]]


def boot_id(host: Host, name: str) -> str:
    return host.cove("run", name, "--", "cat", "/proc/sys/kernel/random/boot_id", check=True).stdout


def test_apply_creates_starts_and_a_second_apply_does_nothing(
    cove_host: Host, busybox_image: Path
) -> None:
    auto, manual = cove_host.name("auto"), cove_host.name("manual")
    cove_host.write(f"""
        [containers.{auto}]
        image = "{busybox_image}"
        {SLEEPER}
        auto-start = true
        [containers.{manual}]
        image = "{busybox_image}"
        {SLEEPER}
        """)
    assert plan(cove_host) == [(auto, "create", []), (manual, "create", []), (auto, "start", [])]
    done = cove_host.cove("apply", check=True).stdout
    assert f"{auto}: started\n" in done and f"{manual}: created\n" in done
    assert cove_host.cove("status", auto).stdout == "up\n"
    assert cove_host.cove("status", manual).stdout == "down\n"  # declared, not auto-start
    assert plan(cove_host) == []
    again = cove_host.cove("apply", check=True).stdout
    assert again == "nothing to do: the host is as the file says\n"
    # An auto-start container stopped by hand is started again by the next apply.
    cove_host.cove("stop", auto, check=True)
    assert plan(cove_host) == [(auto, "start", [])]


def test_apply_sees_what_a_container_started_by_hand_runs_with(
    cove_host: Host, busybox_image: Path, tmp_path: Path
) -> None:
    name = cove_host.name("byhand")
    (tmp_path / "shared").mkdir()
    declared = sleeper(name, busybox_image)
    cove_host.write(declared)
    cove_host.cove("start", name, check=True)  # never applied
    binds = f'[containers.{name}.bind-mounts."/mnt/shared"]\nhost-path = "{tmp_path}/shared"\n'
    cove_host.write(declared + binds)
    assert plan(cove_host) == [(name, "restart", ["bind-mounts"]), (name, "create", [])]
    cove_host.cove("apply", check=True)
    assert cove_host.cove("run", name, "--", "ls", "-d", "/mnt/shared").returncode == 0
    assert plan(cove_host) == []
    # Restarted by hand with a changed key: the next apply records it, without a restart.
    cove_host.write(declared + binds + f'[containers.{name}.environment]\nA = "1"\n')
    cove_host.cove("restart", name, check=True)
    leader = json.loads(cove_host.cove("status", name, "--json", check=True).stdout)["leader"]
    assert plan(cove_host) == [(name, "update", ["environment"])]
    cove_host.cove("apply", check=True)
    assert json.loads(cove_host.cove("status", name, "--json").stdout)["leader"] == leader
    assert plan(cove_host) == []


def test_files_of_a_running_booted_container_are_updated_in_place(cove_host: Host) -> None:
    name = cove_host.name("files")
    declared = f"[containers.{name}]\nephemeral = true\nauto-start = true\n"
    cove_host.write(declared + "[containers." + name + '.files]\n"/etc/motd" = "one\\n"\n')
    cove_host.cove("apply", check=True)
    before = boot_id(cove_host, name)
    cove_host.write(declared + "[containers." + name + '.files]\n"/etc/motd" = "two\\n"\n')
    assert plan(cove_host) == [(name, "update", ["files"])]
    assert f"{name}: updated (files)" in cove_host.cove("apply", check=True).stdout
    assert cove_host.cove("run", name, "--", "cat", "/etc/motd").stdout == "two\n"
    assert boot_id(cove_host, name) == before  # not restarted
    assert plan(cove_host) == []
    # A guest reboot (an ephemeral root starts empty) gets the new files, not the old ones.
    cove_host.cove("run", name, "--", "systemctl", "reboot")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        ran = cove_host.cove("run", name, "--", "cat", "/proc/sys/kernel/random/boot_id")
        if ran.returncode == 0 and ran.stdout != before:
            break
        time.sleep(0.2)
    assert cove_host.cove("run", name, "--", "cat", "/etc/motd").stdout == "two\n"


def test_forward_ports_changed_restarts_naming_the_key(net_host: Host, busybox_image: Path):
    name = net_host.name("fwd")
    net = f"""
        [containers.{name}]
        image = "{busybox_image}"
        {SLEEPER}
        ephemeral = true
        auto-start = true
        private-network = true
        host-address = "10.84.0.1"
        local-address = "10.84.0.2"
        """
    net_host.write(net + "forward-ports = [{ host-port = 8080, container-port = 80 }]\n")
    net_host.cove("apply", check=True)
    leader = json.loads(net_host.cove("status", name, "--json", check=True).stdout)["leader"]
    net_host.write(net + "forward-ports = [{ host-port = 8081, container-port = 80 }]\n")
    text = net_host.cove("plan", check=True).stdout
    assert f"{name}  restart  forward-ports  changed while running" in text
    assert f"{name}: restarted (forward-ports)" in net_host.cove("apply", check=True).stdout
    after = json.loads(net_host.cove("status", name, "--json", check=True).stdout)["leader"]
    assert after != leader
    assert net_host.netns
    listing = ["nsenter", f"--net=/run/netns/{net_host.netns}", "nft", "list", "table", "inet",
               "cove"]  # fmt: skip
    rules = subprocess.run(listing, capture_output=True, text=True).stdout
    assert "8081" in rules and "8080" not in rules


def test_restart_if_changed_false_keeps_it_running_with_its_old_settings(
    cove_host: Host, busybox_image: Path
) -> None:
    name = cove_host.name("keep")
    base = f"""
        [containers.{name}]
        image = "{busybox_image}"
        {SLEEPER}
        ephemeral = true
        auto-start = true
        restart-if-changed = false
        """
    cove_host.write(base)
    cove_host.cove("apply", check=True)
    before = boot_id(cove_host, name)
    leader = json.loads(cove_host.cove("status", name, "--json", check=True).stdout)["leader"]
    cove_host.write(base + 'environment = { NEW = "yes" }\n')
    text = cove_host.cove("plan", check=True).stdout
    assert "restart-if-changed = false keeps it running with its old settings" in text
    cove_host.cove("apply", check=True)
    assert boot_id(cove_host, name) == before
    status = json.loads(cove_host.cove("status", name, "--json", check=True).stdout)
    assert status["leader"] == leader
    assert plan(cove_host) == []


def test_a_dropped_container_is_stopped_and_removed_its_data_kept_unless_pruned(
    net_host: Host, busybox_image: Path
) -> None:
    assert net_host.netns
    gone, kept = net_host.name("gone"), net_host.name("kept")
    one = f"""
        [containers.{kept}]
        image = "{busybox_image}"
        {SLEEPER}
        """
    dropped = f"""
        [containers.{gone}]
        image = "{busybox_image}"
        {SLEEPER}
        auto-start = true
        private-network = true
        host-address = "10.85.0.1"
        local-address = "10.85.0.2"
        """
    net_host.write(one + dropped)
    net_host.cove("apply", check=True)
    net_host.cove("run", gone, "--", "sh", "-c", "echo data > /kept-file", check=True)
    data = net_host.root / "state" / "containers" / gone
    assert data.is_dir()
    net_host.write(one)
    assert plan(net_host) == [(gone, "stop", []), (gone, "remove", [])]
    done = net_host.cove("apply", check=True).stdout
    assert f"{gone}: stopped\n{gone}: removed\n" in done
    links = [link["ifname"] for link in ip_json(net_host.netns, "link")]
    assert not any(str(link).startswith("ve-") for link in links)
    assert not (net_host.root / "run" / gone).exists()
    record = json.loads((net_host.root / "state" / "applied" / f"{gone}.json").read_text())
    assert record["removed"] is True  # what a later --prune may still take
    assert (data / "upper" / "kept-file").read_text() == "data\n"
    assert plan(net_host) == []
    assert plan(net_host, "--prune") == [(gone, "prune", [])]
    assert net_host.cove("apply", "--prune", check=True).stdout == f"{gone}: data removed\n"
    assert not data.exists()
    assert not (net_host.root / "state" / "applied" / f"{gone}.json").exists()
    assert plan(net_host, "--prune") == []
    # Dropped and pruned in one go.
    net_host.write(one + dropped)
    net_host.cove("apply", check=True)
    net_host.write(one)
    assert plan(net_host, "--prune") == [(gone, "stop", []), (gone, "remove", []),
                                         (gone, "prune", [])]  # fmt: skip
    net_host.cove("apply", "--prune", check=True)
    assert not data.exists()


def test_fifty_declared_one_changed_apply_touches_exactly_one(
    cove_host: Host, busybox_image: Path
) -> None:
    names = [cove_host.name(f"m{i}") for i in range(50)]
    text = "".join(sleeper(n, busybox_image) for n in names)
    cove_host.write(text)
    assert len(cove_host.cove("apply", check=True).stdout.splitlines()) == 50
    cove_host.write(text.replace(f"[containers.{names[7]}]\n",
                                 f"[containers.{names[7]}]\ntimeout-stop-sec = 5\n"))  # fmt: skip
    assert cove_host.cove("apply", check=True).stdout == f"{names[7]}: updated (timeout-stop-sec)\n"


@pytest.mark.parametrize("fault", ["create", "start", "update", "restart", "stop", "remove"])
def test_an_apply_killed_after_any_kind_of_action_is_finished_by_the_next(
    cove_host: Host, busybox_image: Path, fault: str
) -> None:
    """Each case makes a plan with the verb in it, kills cove right after carrying that
    action out (before its record is written), then applies again."""
    a, b = cove_host.name("a"), cove_host.name("b")

    def box(name: str, extra: str = "") -> str:
        return sleeper(name, busybox_image, extra) + "\n"

    first = {
        "create": "", "start": "", "update": box(a), "restart": box(a, "auto-start = true"),
        "stop": box(a, "auto-start = true") + box(b), "remove": box(a) + box(b),
    }[fault]  # fmt: skip
    second = {
        "create": box(a), "start": box(a, "auto-start = true"),
        "update": box(a, "timeout-stop-sec = 5"),
        "restart": box(a, "auto-start = true\ntimeout-stop-sec = 5"),
        "stop": box(b), "remove": box(b),
    }[fault]  # fmt: skip
    if first:
        cove_host.write(first)
        cove_host.cove("apply", check=True)
    cove_host.write(second)
    assert fault in [verb for _, verb, _ in plan(cove_host)]
    env = {**os.environ, "COVE_CONFIG": str(cove_host.config), "COVE_TEST_FAULT": fault}
    killed = subprocess.run([*COVE, "apply"], env=env, capture_output=True, text=True)
    assert killed.returncode == -9, killed.stdout + killed.stderr
    cove_host.cove("apply", check=True)
    assert plan(cove_host) == []
    expected_up = {"create": set(), "start": {a}, "update": set(), "restart": {a},
                   "stop": set(), "remove": set()}[fault]  # fmt: skip
    for name in (a, b):
        state = cove_host.cove("status", name).stdout
        assert (state == "up\n") == (name in expected_up), (name, state)


def test_two_applies_at_once_queue_on_a_lock(cove_host: Host, busybox_image: Path) -> None:
    name = cove_host.name("lock")
    cove_host.write(sleeper(name, busybox_image))
    (cove_host.root / "state").mkdir()
    lock = os.open(cove_host.root / "state" / "apply.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        os.write(lock, b"4242\n")
        refused = cove_host.cove("apply", "--no-wait")
        assert refused.returncode == 1
        assert "another cove apply (pid 4242) is running" in refused.stderr
        env = {**os.environ, "COVE_CONFIG": str(cove_host.config)}
        waiting = subprocess.Popen([*COVE, "apply"], env=env, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True)  # fmt: skip
        assert waiting.stderr is not None
        ready, _, _ = select.select([waiting.stderr], [], [], 60)
        said = waiting.stderr.readline() if ready else ""
        assert said == "cove: waiting for another cove apply (pid 4242)...\n"
        assert waiting.poll() is None, "it waits while the lock is held"
    finally:
        os.close(lock)
    out, err = waiting.communicate(timeout=60)
    assert waiting.returncode == 0, err
    assert out == f"{name}: created\n"


def test_apply_json_says_what_was_done_and_what_failed(
    cove_host: Host, busybox_image: Path, tmp_path: Path
) -> None:
    good, bad = cove_host.name("good"), cove_host.name("bad")
    missing = tmp_path / "missing"
    cove_host.write(
        sleeper(good, busybox_image, "auto-start = true\n")
        + sleeper(bad, busybox_image, "auto-start = true\n")
        + f'[containers.{bad}.bind-mounts."/mnt"]\nhost-path = "{missing}"\n'
    )
    result = cove_host.cove("apply", "--json")
    assert result.returncode == 1, result.stderr
    actions = {(a["name"], a["action"]): a for a in json.loads(result.stdout)["actions"]}
    assert actions[(good, "start")]["done"] and actions[(good, "start")]["error"] is None
    assert not actions[(bad, "start")]["done"]
    assert f"{missing} does not exist" in actions[(bad, "start")]["error"]
    assert cove_host.cove("status", good).stdout == "up\n"
    assert cove_host.cove("status", bad).stdout == "down\n"
