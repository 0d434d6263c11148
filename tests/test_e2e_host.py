"""Real containers on the host image (`image = "host"`): the host's /usr, a generated /etc."""

from __future__ import annotations

from pathlib import Path

import pytest

from cove import cgroups
from tests.conftest import Host
from tests.guest_units import HANG, as_toml, wanted

pytestmark = pytest.mark.e2e


def _os_release_field(text: str, key: str) -> str:
    for line in text.splitlines():
        if line.startswith(f"{key}="):
            return line.split("=", 1)[1].strip('"')
    raise AssertionError(f"{key} missing from os-release:\n{text}")


def test_booted_host_container_runs_systemd_with_nothing_failed(cove_host: Host) -> None:
    name = cove_host.name("web")
    cove_host.write(f"[containers.{name}]\n")
    started = cove_host.cove("start", name, check=True)
    assert f"{name}: started (leader PID " in started.stdout
    assert cove_host.cove("status", name).stdout == "up\n"

    # READY comes from the guest's systemd (--notify-ready=yes): boot has finished.
    state = cove_host.cove("run", name, "--", "systemctl", "is-system-running")
    assert (state.stdout, state.returncode) == ("running\n", 0), state.stderr
    failed = cove_host.cove("run", name, "--", "systemctl", "--failed", "--no-legend", "--plain")
    assert failed.stdout == ""
    pid1 = cove_host.cove("run", name, "--", "cat", "/proc/1/comm")
    assert pid1.stdout == "systemd\n"

    guest = cove_host.cove("run", name, "--", "cat", "/etc/os-release", check=True).stdout
    host = Path("/usr/lib/os-release").read_text()
    assert _os_release_field(guest, "PRETTY_NAME") == _os_release_field(host, "PRETTY_NAME")
    assert cove_host.cove("run", name, "--", "hostname").stdout == f"{name}\n"

    # The host's /usr is shared read-only; the guest's password hashes are not the host's.
    denied = cove_host.cove("run", name, "--", "touch", "/usr/cove-must-not-exist")
    assert denied.returncode != 0
    assert "Read-only file system" in denied.stderr
    assert not Path("/usr/cove-must-not-exist").exists()
    shadow = cove_host.cove("run", name, "--", "cat", "/etc/shadow", check=True).stdout
    assert shadow.startswith("root:*:")
    owners = cove_host.cove("run", name, "--", "stat", "-c", "%U:%G %a", "/etc/shadow",
                            "/etc/gshadow", check=True).stdout  # fmt: skip
    assert owners == "root:shadow 640\nroot:shadow 640\n"  # as on a Debian host

    assert cove_host.cove("stop", name, check=True).stdout == f"{name}: stopped\n"
    assert cove_host.cove("status", name).stdout == "down\n"
    assert not cgroups.Group(f"cove-test-{cove_host.tag}/{name}").exists()
    assert not (cove_host.root / "run" / name).exists()


def test_each_container_gets_its_own_machine_id(cove_host: Host) -> None:
    a, b = cove_host.name("ida"), cove_host.name("idb")
    cove_host.write(f"[containers.{a}]\nephemeral = true\n[containers.{b}]\nephemeral = true\n")
    cove_host.cove("start", a, b, check=True)
    ids = [
        cove_host.cove("run", n, "--", "cat", "/etc/machine-id", check=True).stdout.strip()
        for n in (a, b)
    ]
    assert all(len(i) == 32 for i in ids), ids
    assert ids[0] != ids[1]
    assert Path("/etc/machine-id").read_text().strip() not in ids


def test_ephemeral_host_container_forgets_and_leaves_no_trace(cove_host: Host) -> None:
    name = cove_host.name("eph")
    cove_host.write(f"[containers.{name}]\nephemeral = true\n")
    for d in ("state", "run"):
        (cove_host.root / d).mkdir()
    before = cove_host.snapshot()

    cove_host.cove("start", name, check=True)
    cove_host.cove("run", name, "--", "sh", "-c", "echo scratch > /root/file", check=True)
    assert cove_host.cove("run", name, "--", "cat", "/root/file").stdout == "scratch\n"
    assert before.difference(cove_host.snapshot()), "the snapshot must see a running container"

    cove_host.cove("restart", name, check=True)
    gone = cove_host.cove("run", name, "--", "cat", "/root/file")
    assert gone.returncode == 1
    assert "No such file" in gone.stderr
    running = cove_host.cove("run", name, "--", "systemctl", "is-system-running")
    assert running.stdout == "running\n"

    cove_host.cove("stop", name, check=True)
    assert before.difference(cove_host.snapshot()) == {}


def test_host_image_runs_a_single_command(cove_host: Host) -> None:
    name = cove_host.name("cmd")
    cove_host.write(f"""
        [containers.{name}]
        boot = false
        command = ["/bin/sleep", "infinity"]
        ephemeral = true
        """)
    cove_host.cove("start", name, check=True)
    ps = cove_host.cove("run", name, "--", "cat", "/proc/2/cmdline", check=True)
    assert ps.stdout.split("\0")[:2] == ["/bin/sleep", "infinity"]
    whoami = cove_host.cove("run", name, "--", "id", "-un")
    assert (whoami.returncode, whoami.stdout) == (0, "root\n")
    cove_host.cove("stop", name, check=True)
    assert cove_host.cove("status", name).stdout == "down\n"


def test_thirty_booted_containers_started_at_once_all_get_ready(cove_host: Host) -> None:
    import os
    import subprocess

    from tests.conftest import COVE

    names = [cove_host.name(f"m{i}") for i in range(30)]
    cove_host.write("".join(f"[containers.{n}]\nephemeral = true\n" for n in names))
    before = cove_host.snapshot()
    env = {**os.environ, "COVE_CONFIG": str(cove_host.config)}

    def at_once(verb: str) -> list[subprocess.CompletedProcess[str]]:
        running = [
            subprocess.Popen(
                [*COVE, verb, n], env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE
            )  # fmt: skip
            for n in names
        ]
        return [subprocess.CompletedProcess(p.args, p.wait(180), *p.communicate()) for p in running]

    # Each booted guest takes several inotify instances; the kernel's default (128 per user,
    # for the whole machine) is too few for 30, as cove's start failure says. Raised here for
    # the test's duration, as the README tells users to.
    limit = Path("/proc/sys/fs/inotify/max_user_instances")
    saved = limit.read_text()
    limit.write_text("1024\n")
    try:  # kept until they are gone: the other tests' guests count too
        started = at_once("start")
        assert [r.returncode for r in started] == [0] * 30, [r.stderr for r in started]
        states = {cove_host.cove("run", n, "--", "systemctl", "is-system-running").stdout
                  for n in names}  # fmt: skip
        assert states <= {"running\n", "starting\n"}  # ready: systemd said so
        stopped = at_once("stop")
        assert [r.returncode for r in stopped] == [0] * 30
    finally:
        at_once("terminate")
        limit.write_text(saved)
    assert cove_host.snapshot() == before


def test_login_gives_the_guest_login_prompt_on_a_terminal(cove_host: Host) -> None:
    import os
    import pty
    import select
    import signal
    import sys
    import time

    name = cove_host.name("lg")
    cove_host.write(f"[containers.{name}]\nephemeral = true\n")
    cove_host.cove("start", name, check=True)
    refused = cove_host.cove("login", name)
    assert refused.returncode == 2 and "needs a terminal" in refused.stderr
    pid, terminal = pty.fork()
    if pid == 0:  # pragma: no cover - the child becomes cove login
        os.environ["COVE_CONFIG"] = str(cove_host.config)
        os.execv(sys.executable, [sys.executable, "-m", "cove", "login", name])
    seen = b""
    deadline = time.monotonic() + 20
    try:
        while b"login:" not in seen and time.monotonic() < deadline:
            if select.select([terminal], [], [], 0.2)[0]:
                seen += os.read(terminal, 4096)
    finally:
        os.kill(pid, signal.SIGKILL)  # the cove login this test started
        os.waitpid(pid, 0)
        os.close(terminal)
    assert f"{name} login:".encode() in seen
    cove_host.cove("stop", name, check=True)


def test_a_booted_guest_that_never_powers_off_is_killed_after_the_stop_timeout(
    cove_host: Host,
) -> None:
    name = cove_host.name("hangs")
    unit = as_toml(HANG)
    cove_host.write(f"""
        [containers.{name}]
        ephemeral = true
        timeout-stop-sec = 3
        [containers.{name}.files]
        "/etc/systemd/system/hang.service" = "{unit}"
        "/etc/systemd/system/multi-user.target.d/hang.conf" = "{wanted("hang")}"
        """)
    before = cove_host.snapshot()
    cove_host.cove("start", name, check=True)
    active = cove_host.cove("run", name, "--", "systemctl", "is-active", "hang").stdout
    assert active == "active\n"
    assert cove_host.cove("stop", name, check=True).stdout == f"{name}: stopped\n"
    assert "still running 3s after stop; killing it" in cove_host.log(name)
    assert cove_host.cove("status", name).stdout == "down\n"
    assert cove_host.snapshot() == before
