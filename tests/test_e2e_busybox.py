"""Real containers from a busybox directory image on the direct backend."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import time
from pathlib import Path

import pytest

from cove import cgroups
from tests.conftest import COVE, Host

pytestmark = pytest.mark.e2e

SLEEPER = '["/bin/sh", "-c", "exec sleep 1000"]'


def app(host: Host, short: str, image: Path, extra: str = "", command: str = SLEEPER) -> str:
    name = host.name(short)
    return f"""
        [containers.{name}]
        image = "{image}"
        boot = false
        command = {command}
        {extra}
        """


def test_run_passes_exit_code_stdout_stderr_and_stdin(cove_host: Host, busybox_image: Path):
    name = cove_host.name("run")
    cove_host.write(app(cove_host, "run", busybox_image))
    started = cove_host.cove("start", name, check=True)
    assert f"{name}: started (leader PID " in started.stdout

    result = cove_host.cove("run", name, "--", "sh", "-c", "echo out; echo err >&2; exit 7")
    assert (result.returncode, result.stdout, result.stderr) == (7, "out\n", "err\n")

    piped = cove_host.cove("run", name, "--", "tr", "a-z", "A-Z", input="hello\n")
    assert (piped.returncode, piped.stdout) == (0, "HELLO\n")

    release = cove_host.cove("run", name, "--", "cat", "/usr/lib/os-release")
    assert "ID=busybox" in release.stdout

    missing = cove_host.cove("run", name, "--", "/no/such/command")
    assert missing.returncode == 127

    assert cove_host.cove("stop", name, check=True).stdout == f"{name}: stopped\n"


def test_run_on_stopped_container_exits_125(cove_host: Host, busybox_image: Path) -> None:
    name = cove_host.name("down")
    cove_host.write(app(cove_host, "down", busybox_image))
    result = cove_host.cove("run", name, "--", "true")
    assert result.returncode == 125
    assert f"cove: {name}: it is not running" in result.stderr
    assert f"hint: start it with: cove start {name}" in result.stderr
    assert cove_host.cove("run", "undeclared", "--", "true").returncode == 125


def test_persistent_root_survives_stop_and_start(cove_host: Host, busybox_image: Path) -> None:
    name = cove_host.name("keep")
    cove_host.write(app(cove_host, "keep", busybox_image))
    cove_host.cove("start", name, check=True)
    cove_host.cove("run", name, "--", "sh", "-c", "echo kept > /root/file", check=True)
    cove_host.cove("stop", name, check=True)
    upper = cove_host.root / "state/containers" / name / "upper/root/file"
    assert upper.read_text() == "kept\n"
    assert not (busybox_image / "root/file").exists(), "the image itself must stay untouched"
    cove_host.cove("start", name, check=True)
    assert cove_host.cove("run", name, "--", "cat", "/root/file").stdout == "kept\n"


def test_ephemeral_root_is_empty_after_restart(cove_host: Host, busybox_image: Path) -> None:
    name = cove_host.name("eph")
    cove_host.write(app(cove_host, "eph", busybox_image, "ephemeral = true"))
    cove_host.cove("start", name, check=True)
    cove_host.cove("run", name, "--", "sh", "-c", "echo gone > /root/file", check=True)
    assert cove_host.cove("run", name, "--", "cat", "/root/file").stdout == "gone\n"
    cove_host.cove("restart", name, check=True)
    result = cove_host.cove("run", name, "--", "cat", "/root/file")
    assert result.returncode == 1
    assert "No such file" in result.stderr
    assert not (cove_host.root / "state/containers" / name).exists()


def test_ephemeral_leaves_no_trace(cove_host: Host, busybox_image: Path) -> None:
    name = cove_host.name("trace")
    cove_host.write(app(cove_host, "trace", busybox_image, "ephemeral = true"))
    # cove's base directories exist on any host that has run a container before.
    for d in ("state", "run"):
        (cove_host.root / d).mkdir(exist_ok=True)
    before = cove_host.snapshot()
    cove_host.cove("start", name, check=True)
    cove_host.cove("run", name, "--", "sh", "-c", "dd if=/dev/zero of=/big bs=1k count=64",
                   check=True)  # fmt: skip
    during = cove_host.snapshot()
    assert before.difference(during), "the snapshot must see a running container"
    cove_host.cove("stop", name, check=True)
    assert before.difference(cove_host.snapshot()) == {}
    # Killed rather than stopped: still nothing left.
    cove_host.cove("start", name, check=True)
    assert cove_host.cove("terminate", name, check=True).stdout == f"{name}: terminated\n"
    assert before.difference(cove_host.snapshot()) == {}


def test_environment_bind_mounts_and_tmpfs(cove_host: Host, busybox_image: Path) -> None:
    name = cove_host.name("env")
    data = cove_host.root / "my data"
    data.mkdir()
    (data / "in").write_text("from host\n")
    ro = cove_host.root / "ro"
    ro.mkdir()
    command = '["/bin/sh", "-c", "echo \\"$GREETING\\" > /tmp/greeting; exec sleep 1000"]'
    cove_host.write(
        app(cove_host, "env", busybox_image, command=command, extra=f"""
        tmpfs = ["/scratch:mode=0700"]
        environment = {{ GREETING = "hello world 100% $HOME \\"q\\"" }}
        [containers.{name}.bind-mounts."/data"]
        host-path = "{data}"
        is-read-only = false
        [containers.{name}.bind-mounts."/ro"]
        host-path = "{ro}"
        """)
    )  # fmt: skip
    cove_host.cove("start", name, check=True)
    greeting = cove_host.cove("run", name, "--", "cat", "/tmp/greeting").stdout
    assert greeting == 'hello world 100% $HOME "q"\n'
    run_env = cove_host.cove("run", name, "--", "sh", "-c", 'echo "$GREETING"').stdout
    assert run_env == 'hello world 100% $HOME "q"\n'
    assert cove_host.cove("run", name, "--", "cat", "/data/in").stdout == "from host\n"
    cove_host.cove("run", name, "--", "sh", "-c", "echo back > /data/out", check=True)
    assert (data / "out").read_text() == "back\n"
    denied = cove_host.cove("run", name, "--", "touch", "/ro/x")
    assert denied.returncode != 0
    assert "Read-only file system" in denied.stderr
    mounts = cove_host.cove("run", name, "--", "cat", "/proc/mounts").stdout
    assert any(line.split()[1:3] == ["/scratch", "tmpfs"] for line in mounts.splitlines())


def test_missing_bind_source_fails_before_anything_starts(
    cove_host: Host, busybox_image: Path
) -> None:
    name = cove_host.name("nobind")
    cove_host.write(
        app(cove_host, "nobind", busybox_image, extra=f"""
        [containers.{name}.bind-mounts."/data"]
        host-path = "{cove_host.root}/absent"
        """)
    )  # fmt: skip
    before = cove_host.snapshot()
    result = cove_host.cove("start", name)
    assert result.returncode == 2
    key = f'containers.{name}.bind-mounts."/data".host-path'
    assert (f"cove: cannot start {name}: {cove_host.config}: {key}: {cove_host.root}/absent "
            "does not exist") in result.stderr  # fmt: skip
    assert before.difference(cove_host.snapshot()) == {}
    assert not (cove_host.root / "log").exists()


def test_second_start_is_a_no_op(cove_host: Host, busybox_image: Path) -> None:
    name = cove_host.name("twice")
    cove_host.write(app(cove_host, "twice", busybox_image))
    first = cove_host.cove("start", name, check=True)
    second = cove_host.cove("start", name, check=True)
    assert f"{name}: already running" in second.stdout
    leader = first.stdout.split("leader PID ")[1].rstrip(")\n")
    assert f"leader PID {leader})" in second.stdout
    group = cgroups.Group(f"cove-test-{cove_host.tag}/{name}")
    sleepers = [p for p in group.pids() if _cmdline(p).startswith("sleep")]
    assert len(sleepers) == 1


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def test_command_ignoring_sigterm_is_killed_after_timeout(
    cove_host: Host, busybox_image: Path
) -> None:
    name = cove_host.name("stubborn")
    command = '["/bin/sh", "-c", "trap \\"\\" TERM; while :; do sleep 0.1; done"]'
    cove_host.write(app(cove_host, "stubborn", busybox_image, "timeout-stop-sec = 1", command))
    cove_host.cove("start", name, check=True)
    cove_host.cove("stop", name, check=True)
    assert "still running 1s after stop; killing it" in cove_host.log(name)
    assert cove_host.cove("status", name).stdout == "down\n"
    assert not cgroups.Group(f"cove-test-{cove_host.tag}/{name}").exists()


def test_command_handling_sigterm_stops_cleanly(cove_host: Host, busybox_image: Path) -> None:
    name = cove_host.name("polite")
    command = (
        '["/bin/sh", "-c", "trap \\"echo got TERM; exit 0\\" TERM; while :; do sleep 0.1; done"]'
    )
    cove_host.write(app(cove_host, "polite", busybox_image, "timeout-stop-sec = 30", command))
    cove_host.cove("start", name, check=True)
    cove_host.cove("stop", name, check=True)
    log = cove_host.log(name)
    assert "got TERM" in log
    assert "container exited with status 0" in log
    assert "killing it" not in log


def test_killed_supervisor_is_reported_and_cleaned_up(cove_host: Host, busybox_image: Path) -> None:
    name = cove_host.name("orphan")
    cove_host.write(app(cove_host, "orphan", busybox_image, "timeout-stop-sec = 5"))
    (cove_host.root / "state").mkdir()
    (cove_host.root / "run").mkdir()
    before = cove_host.snapshot()
    cove_host.cove("start", name, check=True)
    status = json.loads((cove_host.root / "run" / name / "status.json").read_text())
    os.kill(status["supervisor"], signal.SIGKILL)
    _wait(lambda: not Path(f"/proc/{status['supervisor']}").exists())
    result = cove_host.cove("status", name)
    assert result.stdout == "orphaned\n"
    assert f"`cove stop {name}` cleans it up" in result.stderr
    listed = json.loads(cove_host.cove("list", "--json").stdout)
    assert listed["containers"][0]["state"] == "orphaned"
    assert cove_host.cove("stop", name, check=True).stdout == f"{name}: stopped\n"
    assert cove_host.cove("status", name).stdout == "down\n"
    assert not _alive(status["nspawn"])
    after = cove_host.snapshot()
    # The persistent container's upper layer stays; nothing else may.
    diff = before.difference(after)
    assert set(diff) <= {"files"}
    kept = [line for line in diff.get("files", []) if "state/containers" not in line]
    assert kept == []


def test_start_after_orphan_takes_over(cove_host: Host, busybox_image: Path) -> None:
    name = cove_host.name("retake")
    cove_host.write(app(cove_host, "retake", busybox_image, "timeout-stop-sec = 5"))
    cove_host.cove("start", name, check=True)
    status = json.loads((cove_host.root / "run" / name / "status.json").read_text())
    os.kill(status["supervisor"], signal.SIGKILL)
    _wait(lambda: not Path(f"/proc/{status['supervisor']}").exists())
    restarted = cove_host.cove("start", name, check=True)
    assert f"{name}: started" in restarted.stdout
    assert not _alive(status["nspawn"])
    assert cove_host.cove("run", name, "--", "true").returncode == 0


def test_command_that_exits_at_once_leaves_its_output_in_the_log(
    cove_host: Host, busybox_image: Path
) -> None:
    name = cove_host.name("fails")
    command = '["/bin/sh", "-c", "echo something broke; exit 3"]'
    cove_host.write(app(cove_host, "fails", busybox_image, command=command))
    # Ready means the command started; it then exits and the container is down.
    cove_host.cove("start", name, check=True)
    _wait(lambda: cove_host.cove("status", name).stdout == "down\n")
    assert "something broke" in cove_host.log(name)
    assert "container exited with status 3" in cove_host.log(name)
    assert not (cove_host.root / "run" / name).exists()


def test_guest_never_ready_fails_after_timeout_with_its_last_output(
    cove_host: Host, busybox_image: Path
) -> None:
    name = cove_host.name("slow")
    # An init that never tells nspawn it is ready: the start must give up and clean up.
    sbin = cove_host.root / "sbin"
    sbin.mkdir()
    (sbin / "init").write_text("#!/bin/sh\necho guest is still busy\nexec sleep 1000\n")
    (sbin / "init").chmod(0o755)
    cove_host.write(f"""
        [containers.{name}]
        image = "{busybox_image}"
        ephemeral = true
        timeout-start-sec = "1500ms"
        timeout-stop-sec = 2
        [containers.{name}.bind-mounts."/sbin"]
        host-path = "{sbin}"
        """)
    for d in ("state", "run"):
        (cove_host.root / d).mkdir()
    before = cove_host.snapshot()
    result = cove_host.cove("start", name)
    assert result.returncode == 1
    assert f"cove: {name} failed to start: not ready after 1.5s (timeout-start-sec)" in (
        result.stderr
    )
    assert "hint: full console log: " in result.stderr
    assert "guest is still busy" in result.stderr, "the guest's last output is shown"
    assert cove_host.cove("status", name).stdout == "down\n"
    assert before.difference(cove_host.snapshot()) == {}


def test_root_login_gives_a_root_shell(cove_host: Host, busybox_image: Path) -> None:
    name = cove_host.name("login")
    cove_host.write(app(cove_host, "login", busybox_image))
    cove_host.cove("start", name, check=True)
    shell = cove_host.cove("root-login", name, input="id -u; echo $HOME; exit 4\n")
    assert (shell.returncode, shell.stdout) == (4, "0\n/root\n")
    cove_host.cove("stop", name, check=True)
    down = cove_host.cove("root-login", name)
    assert (down.returncode, down.stderr.splitlines()[0]) == (
        125,
        f"cove: {name}: it is not running",
    )
    assert cove_host.cove("root-login", "undeclared").returncode == 3


def test_list_and_status_json(cove_host: Host, busybox_image: Path) -> None:
    name = cove_host.name("json")
    cove_host.write(app(cove_host, "json", busybox_image, "ephemeral = true"))
    cove_host.cove("start", name, check=True)
    status = json.loads(cove_host.cove("status", name, "--json").stdout)
    assert status["version"] == 1
    assert status["state"] == "up"
    assert status["root"] == "ephemeral"
    assert isinstance(status["leader"], int)
    assert Path(f"/proc/{status['leader']}").exists()
    table = cove_host.cove("list").stdout.splitlines()
    assert table[0].split() == ["NAME", "STATE", "KIND", "ROOT", "BOOT", "IMAGE"]
    assert table[1].split() == [name, "up", "declared", "ephemeral", "no", str(busybox_image)]
    gone = cove_host.cove("status", "nothere")
    assert (gone.returncode, gone.stdout) == (3, "gone\n")


def _alive(pid: int) -> bool:
    """Running, not merely a zombie waiting for whoever inherited it to reap it."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return False
    return fields[0] != "Z"


def _wait(predicate, timeout: float = 10) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.05)


def test_image_without_usr_is_refused_before_anything_starts(cove_host: Host) -> None:
    image = cove_host.root / "bare"
    (image / "bin").mkdir(parents=True)
    name = cove_host.name("bare")
    cove_host.write(app(cove_host, "bare", image))
    result = cove_host.cove("start", name)
    assert result.returncode == 1
    assert f"image {image} has no usr/ directory" in result.stderr
    assert f"hint: create {image}/usr (it may stay empty)" in result.stderr
    assert not (cove_host.root / "run" / name).exists()


def test_debug_prints_the_nspawn_command(cove_host: Host, busybox_image: Path) -> None:
    name = cove_host.name("debug")
    cove_host.write(app(cove_host, "debug", busybox_image))
    result = cove_host.cove("start", name, "--debug", check=True)
    line = next(x for x in result.stderr.splitlines() if x.startswith("+ env -i "))
    assert f"/usr/bin/systemd-nspawn --keep-unit --register=no --machine={name} " in line
    assert line.endswith("-- /bin/sh -c 'exec sleep 1000'")


def test_same_name_from_another_file_with_the_same_cgroup_is_refused(
    cove_host: Host, busybox_image: Path
) -> None:
    name = cove_host.name("twin")
    cove_host.write(app(cove_host, "twin", busybox_image))
    cove_host.cove("start", name, check=True)
    other = cove_host.root / "other"
    other.mkdir()
    text = cove_host.config.read_text().replace(f"{cove_host.root}/", f"{other}/")
    (other / "cove.toml").write_text(text)  # same names and cgroup, other directories
    env = {**os.environ, "COVE_CONFIG": str(other / "cove.toml")}
    result = subprocess.run(
        [*COVE, "start", name], capture_output=True, text=True, env=env, timeout=60
    )
    assert result.returncode == 1
    assert f"cgroup cove-test-{cove_host.tag}/{name} already holds processes" in result.stderr
    assert cove_host.cove("run", name, "--", "true").returncode == 0  # the first is unharmed
    assert not (other / "run" / name).exists()
    cove_host.cove("stop", name, check=True)


def test_logs_outlive_an_ephemeral_container_and_follow_a_running_one(
    cove_host: Host, busybox_image: Path
) -> None:
    name = cove_host.name("talk")
    script = "for i in 1 2 3; do echo line-$i; done; while :; do sleep 0.2; echo tick; done"
    cove_host.write(app(cove_host, "talk", busybox_image, extra="ephemeral = true",
                        command=json.dumps(["/bin/sh", "-c", script])))  # fmt: skip
    cove_host.cove("start", name, check=True)
    env = {**os.environ, "COVE_CONFIG": str(cove_host.config)}
    follow = subprocess.Popen([*COVE, "logs", name, "-f"], env=env, stdout=subprocess.PIPE)
    try:
        assert follow.stdout is not None
        seen = b""
        while seen.count(b"tick") < 3:
            seen += follow.stdout.read1(4096)
        assert b"line-1\nline-2\nline-3\n" in seen
    finally:
        follow.terminate()  # the cove logs this test started
        follow.wait()
    cove_host.cove("stop", name, check=True)
    after = cove_host.cove("logs", name, check=True).stdout
    assert "line-2\n" in after and "tick" in after  # kept after an ephemeral container stopped
    last = cove_host.cove("logs", name, "-n", "1", check=True).stdout
    assert last.count("\n") == 1
    assert cove_host.cove("logs", name, "-n", "-2").returncode == 2


def test_autostart_starts_exactly_the_auto_start_containers(
    cove_host: Host, busybox_image: Path
) -> None:
    early, late = cove_host.name("early"), cove_host.name("late")
    cove_host.write(
        app(cove_host, "early", busybox_image, extra="auto-start = true")
        + app(cove_host, "late", busybox_image)
    )
    assert cove_host.cove("autostart", check=True).stdout.startswith(f"{early}: started")
    assert cove_host.cove("status", early).stdout == "up\n"
    assert cove_host.cove("status", late).stdout == "down\n"
    again = cove_host.cove("autostart", check=True).stdout
    assert again.startswith(f"{early}: already running")
    cove_host.cove("stop", early, check=True)


TERMINAL_CHECK = "test -t 0 && test -t 1 && stty size; read x; echo got $x; exit 3"


def on_a_terminal(cove_argv: list[str]) -> list[str]:
    """`cove run` as typed at a terminal: util-linux script gives it a pseudo-terminal of
    33 rows and 101 columns and returns its exit code."""
    line = " ".join(shlex.quote(a) for a in cove_argv)
    return ["script", "-qec", f"stty rows 33 cols 101; {line}", "/dev/null"]


def test_run_works_on_a_terminal(cove_host: Host, busybox_image: Path) -> None:
    name = cove_host.name("tty")
    cove_host.write(app(cove_host, "tty", busybox_image))
    cove_host.cove("start", name, check=True)
    argv = on_a_terminal([*COVE, "run", name, "--", "sh", "-c", TERMINAL_CHECK])
    env = {**os.environ, "COVE_CONFIG": str(cove_host.config)}
    typed = subprocess.run(argv, input="hello\n", capture_output=True, text=True, env=env)
    cove_host.cove("stop", name, check=True)
    assert typed.returncode == 3, typed.stdout + typed.stderr
    out = typed.stdout.replace("\r", "")
    assert "33 101\n" in out and "got hello\n" in out
