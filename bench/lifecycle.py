#!/usr/bin/env python3
"""Start and stop times of a booted ephemeral host-image container on both backends, against
raw systemd-nspawn doing the same work, and 30 such containers started and stopped at once.

What is timed, in one run, RUNS times with the cases alternating so that all of them see the
same machine:

1. `direct` backend, on this machine: `cove start lc-one` (process start to exit, which is
   when the guest is ready) and `cove stop lc-one` (process start to exit, the guest powered
   off and cleaned up), for `[containers.lc-one] ephemeral = true` (image "host"). Beside it
   the raw baseline of bench/start.py, with the argv cove renders for it: `unshare --mount
   --propagation=slave` runs a `sh` script that mounts the same root cove mounts (a tmpfs
   with the overlay's upper and work dirs, an overlay of a per-container layer holding
   hostname and hosts over cove's generated host /etc tree, the host's /usr bound read-only
   on it) and execs `systemd-nspawn --keep-unit --register=no --machine=lc-raw
   --directory=ROOT --link-journal=no --console=read-only --kill-signal=SIGRTMIN+3
   --notify-ready=yes --boot --resolv-conf=copy-host -- systemd.firstboot=off`, console to
   a file, in a cgroup of its own; start is launch to READY=1 on a notify socket bound here,
   stop is SIGTERM to nspawn until it exited.
2. `systemd` backend, inside one test host (tests/testhost.py, booted once for the whole
   run, stopped at the end whatever happens): the same container with `cove start` / `cove
   stop`, timed inside the test host by a small python3 timer (so nsenter's cost is not
   counted). The raw equivalent is a hand-written unit, `raw-bench.service`, shaped like
   cove's `cove@.service` (Type=notify, NotifyAccess=all, KillMode=mixed, Delegate=yes,
   Slice=machine.slice, the same device policy) whose ExecStart is the same unshare + sh
   script as in 1, on the same kind of root (the test host's /usr read-only over the host
   /etc tree cove generates, /var/lib/cove/images/host, and a hostname layer, with the upper
   on a fresh tmpfs), exec'ing nspawn with the argv cove's unit passes (so
   `--register=yes`: cove's units register with machined, and the baseline does the same
   work). It has no ExecStartPre/ExecStopPost: the difference is cove's own cost (its CLI,
   `cove __hook pre-start`, `cove __exec`, `cove __hook post-stop`). Timed as `systemctl
   start raw-bench` / `systemctl stop raw-bench` by the same timer.
3. 30 at once, on both backends: 30 booted ephemeral host-image containers (lc-00..lc-29),
   wall time from launching 30 `cove start` processes at once until all returned, then the
   same for 30 `cove stop`. fs.inotify.max_user_instances is raised to 1024 for each such
   case (every booted guest takes several instances; 128, the default, is about 25 guests)
   and restored afterwards.

Ratios are cove/raw of the medians. A failed `cove` (or `systemctl`) command does not stop
the run: failures are counted and printed at the end. The first run's systemd-backend starts
include writing the units and their daemon-reload (cove does that once per changed unit): an
outlier the medians absorb. Everything is cleaned up: containers, cgroups, the test host, the
work dir /var/tmp/cove-bench-lifecycle (no mount left under it).

As root: `.venv/bin/python bench/lifecycle.py [--runs N]` (default 7; about 30 s per run on 2
cores, after a few seconds to boot the test host).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from cove import cgroups, quickstart, rootfs  # noqa: E402
from tests.testhost import TestHost, tree, wheel  # noqa: E402

WORK = Path("/var/tmp/cove-bench-lifecycle")
CACHE = Path(os.environ.get("COVE_TEST_CACHE", "/var/cache/cove-test"))
COVE = str(Path(sys.executable).with_name("cove"))
NSPAWN = shutil.which("systemd-nspawn") or "/usr/bin/systemd-nspawn"
GROUP = "cove-bench-lifecycle"  # the cove containers' cgroup ([host] cgroup)
RAW_GROUP = "cove-bench-lifecycle-raw"  # the raw baseline's
ONE = "lc-one"
MANY = tuple(f"lc-{i:02d}" for i in range(30))
RAW = "lc-raw"  # the raw baseline's machine name on this machine
INOTIFY = Path("/proc/sys/fs/inotify/max_user_instances")
PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
ENV = {"PATH": PATH, "SYSTEMD_NSPAWN_UNIFIED_HIERARCHY": "1"}
TH_CONFIG = "/etc/cove/cove.toml"
TH_RAW = Path("/run/raw-bench")  # the raw unit's files inside the test host
TH_HOST_BASE = "/var/lib/cove/images/host"  # cove's host image there (default image-dir)

# Runs argv lists (JSON in argv[1]) all at once; prints the wall time until all returned and
# the failures. The same code times on this machine and inside the test host, where only its
# own run is counted, not nsenter's. Output to /dev/null and files: a supervisor that
# outlived a pipe would keep the read waiting.
TIMER = """\
import json, subprocess, sys, tempfile, time
commands = json.loads(sys.argv[1])
errors = [tempfile.TemporaryFile() for _ in commands]
began = time.perf_counter()
running = [subprocess.Popen(c, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=e)
           for c, e in zip(commands, errors)]
codes = [p.wait() for p in running]
took = time.perf_counter() - began
failed = []
for c, code, e in zip(commands, codes, errors):
    if code:
        e.seek(0)
        failed.append(f"{' '.join(c)}: exit {code}: {e.read().decode(errors='replace')[-1500:]}")
print(json.dumps({"seconds": took, "failed": failed}))
"""


@dataclass
class Results:
    """Seconds per case and phase ("start", "stop"), and what failed on the way."""

    times: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)

    def add(self, case: str, phase: str, seconds: float) -> None:
        self.times.setdefault(case, {}).setdefault(phase, []).append(seconds)


Timer = Callable[[list[list[str]]], tuple[float, list[str]]]


def local_timer(config: Path) -> Timer:
    """TIMER on this machine, with the venv's cove reading `config`."""

    def run(commands: list[list[str]]) -> tuple[float, list[str]]:
        done = subprocess.run(
            [sys.executable, "-c", TIMER, json.dumps(commands)],
            env={"PATH": f"{Path(COVE).parent}:{PATH}", "COVE_CONFIG": str(config)},
            capture_output=True,
            text=True,
            timeout=900,
        )
        if done.returncode != 0:
            raise RuntimeError(f"the timer failed: {done.stderr[-3000:]}")
        out = json.loads(done.stdout)
        return out["seconds"], out["failed"]

    return run


def testhost_timer(th: TestHost) -> Timer:
    """TIMER inside the test host (cove reads its default /etc/cove/cove.toml there)."""

    def run(commands: list[list[str]]) -> tuple[float, list[str]]:
        done = th.run(["python3", "-c", TIMER, json.dumps(commands)], check=True, timeout=900)
        out = json.loads(done.stdout)
        return out["seconds"], out["failed"]

    return run


def timed(results: Results, timer: Timer, case: str, phase: str, commands: list[list[str]]) -> None:
    took, failed = timer(commands)
    results.add(case, phase, took)
    results.failures += [f"{case}, {phase}: {f}" for f in failed]


# -- the raw baseline --------------------------------------------------------------------------
def raw_script(directory: Path, lower: list[str], nspawn_args: list[str]) -> str:
    """sh that mounts the root cove would mount for an ephemeral host-image container (in
    the private mount namespace unshare gave it), then execs nspawn on it."""
    root, scratch = directory / "root", directory / "scratch"
    steps = [
        f"mount -t tmpfs -o nosuid,nodev,mode=0700,size=1G tmpfs {scratch}",
        f"mkdir -m 0755 {scratch}/upper",
        f"mkdir -m 0700 {scratch}/work",
        f"mount -t overlay overlay -o lowerdir={':'.join(lower)},upperdir={scratch}/upper,"
        f"workdir={scratch}/work {root}",
        f"mount --rbind /usr {root}/usr",
        f"mount -o remount,bind,ro {root}/usr",
        "exec " + shlex.join([NSPAWN, *nspawn_args]),
    ]
    return "#!/bin/sh\nset -e\n" + "\n".join(steps) + "\n"


def nspawn_args(machine: str, root: Path, register: bool) -> list[str]:
    """The argv cove renders for an ephemeral booted host-image container (`cove render`)."""
    return [
        "--keep-unit",
        f"--register={'yes' if register else 'no'}",
        f"--machine={machine}",
        f"--directory={root}",
        "--link-journal=no",
        "--console=read-only",
        "--kill-signal=SIGRTMIN+3",
        "--notify-ready=yes",
        "--boot",
        "--resolv-conf=copy-host",
        "--",
        "systemd.firstboot=off",
    ]


def prepare_raw_direct(host_base: Path) -> list[str]:
    """The raw baseline's files on this machine; its argv."""
    directory = WORK / "raw"
    for d in ("root", "scratch"):
        (directory / d).mkdir(parents=True)
    rootfs.write_container_layer(directory / "base", RAW)
    script = directory / "exec.sh"
    lower = [str(directory / "base"), str(host_base)]
    script.write_text(raw_script(directory, lower, nspawn_args(RAW, directory / "root", False)))
    return ["unshare", "--mount", "--propagation=slave", "--", "/bin/sh", str(script)]


def raw_direct(argv: list[str]) -> tuple[float, float]:
    """Seconds from launch to READY=1, and from SIGTERM to nspawn's exit."""
    notify_path = WORK / "raw-notify"
    with contextlib.suppress(FileNotFoundError):
        notify_path.unlink()
    group = cgroups.Group(RAW_GROUP)
    group.create()
    log = WORK / "raw-console.log"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify, log.open("wb") as output:
        notify.bind(str(notify_path))
        began = time.perf_counter()
        child = subprocess.Popen(
            argv,
            env={**ENV, "NOTIFY_SOCKET": str(notify_path)},
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            preexec_fn=lambda: group.join(os.getpid()),
        )
        try:
            notify.settimeout(0.05)
            ready = None
            while ready is None:
                try:
                    message = notify.recv(4096).decode(errors="replace")
                except TimeoutError:
                    if child.poll() is not None:
                        raise RuntimeError(
                            f"raw systemd-nspawn exited {child.returncode} before READY=1:\n"
                            + log.read_text(errors="replace")[-3000:]
                        ) from None
                    if time.perf_counter() - began > 120:
                        raise RuntimeError("raw systemd-nspawn: no READY=1 in 120 s") from None
                    continue
                if "READY=1" in message.splitlines():
                    ready = time.perf_counter() - began
            stopping = time.perf_counter()
            child.send_signal(signal.SIGTERM)  # the nspawn this benchmark started
            while child.poll() is None:  # nspawn blocks if nobody reads its notify socket
                with contextlib.suppress(TimeoutError):
                    notify.recv(4096)
                if time.perf_counter() - stopping > 120:
                    raise RuntimeError("raw systemd-nspawn did not exit within 120 s of SIGTERM")
            stopped = time.perf_counter() - stopping
        finally:
            group.kill()
            child.wait()
            group.wait_empty(10)
            group.remove()
            with contextlib.suppress(OSError):
                os.rmdir(f"/run/systemd/nspawn/propagate/{RAW}")
    return ready, stopped


RAW_UNIT = """\
[Unit]
Description=raw systemd-nspawn baseline of bench/lifecycle.py
After=network.target

[Service]
Type=notify
NotifyAccess=all
Environment=SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=1
ExecStart=/usr/bin/unshare --mount --propagation=slave -- /bin/sh {script}
KillMode=mixed
Delegate=yes
Slice=machine.slice
SuccessExitStatus=133
TimeoutStartSec=60s
TimeoutStopSec=90s
DevicePolicy=closed
DeviceAllow=char-pts rw
"""

# Inside the test host: cove's generated host /etc tree where cove keeps it (so both sides
# boot the same files), and the raw unit's hostname layer.
TH_PREPARE = f"""\
from pathlib import Path
from cove import rootfs
rootfs.ensure_host_base(Path("{TH_HOST_BASE}"))
rootfs.write_container_layer(Path("{TH_RAW}/base"), "raw-bench")
for d in ("root", "scratch"):
    Path("{TH_RAW}", d).mkdir(parents=True, exist_ok=True)
"""


def prepare_testhost(th: TestHost) -> None:
    names = (ONE, *MANY)
    th.write(TH_CONFIG, '[host]\nbackend = "systemd"\n'
             + "".join(f"\n[containers.{n}]\nephemeral = true\n" for n in names))  # fmt: skip
    th.run(["python3", "-c", TH_PREPARE], check=True)
    script = f"{TH_RAW}/exec.sh"
    lower = [f"{TH_RAW}/base", TH_HOST_BASE]
    th.write(script, raw_script(TH_RAW, lower, nspawn_args("raw-bench", TH_RAW / "root", True)))
    th.write("/etc/systemd/system/raw-bench.service", RAW_UNIT.format(script=script))
    th.run(["systemctl", "daemon-reload"], check=True)


# -- 30 at once --------------------------------------------------------------------------------
def thirty(results: Results, timer: Timer, case: str) -> None:
    """30 `cove start` at once, then 30 `cove stop`, with the inotify limit raised meanwhile."""
    saved = INOTIFY.read_text()
    INOTIFY.write_text("1024\n")
    stopped = False
    try:
        timed(results, timer, case, "start", [["cove", "start", n] for n in MANY])
        timed(results, timer, case, "stop", [["cove", "stop", n] for n in MANY])
        stopped = True
    finally:
        try:
            if not stopped:
                timer([["cove", "terminate", *MANY]])
        finally:
            INOTIFY.write_text(saved)


# -- the run -----------------------------------------------------------------------------------
def write_config() -> Path:
    config = WORK / "cove.toml"
    text = textwrap.dedent(f"""\
        [host]
        backend = "direct"
        state-dir = "{WORK}/state"
        runtime-dir = "{WORK}/run"
        log-dir = "{WORK}/log"
        hosts-file = "{WORK}/hosts"
        cgroup = "{GROUP}"
        """)
    text += "".join(f"\n[containers.{n}]\nephemeral = true\n" for n in (ONE, *MANY))
    config.write_text(text)
    return config


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):7.3f} s ({min(values):.3f}-{max(values):.3f})"


def report(runs: int, results: Results) -> None:
    t = results.times
    print(f"booted ephemeral host-image container; median (min-max) of {runs} runs")
    print(f"{'':<42}{'start (to ready)':<30}{'stop'}")
    rows = [
        ("direct", "cove start / cove stop", "direct cove"),
        ("direct", "raw nspawn (notify / SIGTERM)", "direct raw"),
        ("systemd", "cove start / cove stop", "systemd cove"),
        ("systemd", "raw unit (systemctl start/stop)", "systemd raw"),
    ]
    for backend, label, case in rows:
        print(f"{backend:<8}{label:<34}{spread(t[case]['start']):<30}{spread(t[case]['stop'])}")
        if case.endswith("raw"):
            cove_case = t[case.replace("raw", "cove")]
            ratio = {
                p: statistics.median(cove_case[p]) / statistics.median(t[case][p])
                for p in ("start", "stop")
            }
            print(f"{backend:<8}{'ratio cove/raw':<34}{ratio['start']:7.2f}{'':<23}"
                  f"{ratio['stop']:7.2f}")  # fmt: skip
    print("30 at once: from launching 30 `cove start` (then `cove stop`) to all returned")
    for backend in ("direct", "systemd"):
        many = t[f"{backend} 30"]
        print(f"{backend:<8}{'30 x cove start / stop':<34}{spread(many['start']):<30}"
              f"{spread(many['stop'])}")  # fmt: skip
    print(f"failures: {len(results.failures)}")
    for failure in results.failures:
        print("  " + failure.rstrip().replace("\n", "\n    "))


def cleanup(config: Path) -> list[str]:
    """Stop whatever this run started on this machine; what is left behind, if anything."""
    if config.exists():
        subprocess.run([COVE, "terminate", ONE, *MANY], check=False,
                       env={"PATH": PATH, "COVE_CONFIG": str(config)},
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    left = []
    for name in (GROUP, RAW_GROUP):
        group = cgroups.Group(name)
        group.kill()
        group.wait_empty(10)
        group.remove()
        if group.exists():
            left.append(f"cgroup {name}")
    quickstart.forget_all(str(config))
    with contextlib.suppress(OSError):
        os.rmdir(f"/run/systemd/nspawn/propagate/{RAW}")
    subprocess.run(["rm", "-rf", "--one-file-system", str(WORK)], check=False)
    mounts = subprocess.run(["findmnt", "-rn", "-o", "TARGET"], capture_output=True, text=True)
    left += [f"mount {m}" for m in mounts.stdout.splitlines() if m.startswith(str(WORK))]
    left += [f"path {WORK}"] if WORK.exists() else []
    return left


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench/lifecycle.py starts real containers: run it as root")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so that the cleanup runs
    began = time.perf_counter()
    config = WORK / "cove.toml"
    th: TestHost | None = None
    th_clean = True
    try:
        cleanup(config)  # what a killed run left
        WORK.mkdir(parents=True)
        config = write_config()
        host_base = rootfs.ensure_host_base(WORK / "state/images/host")  # shared with cove
        raw_argv = prepare_raw_direct(host_base)
        print("booting the test host...", flush=True)
        th = TestHost(f"lc{secrets.token_hex(3)}", tree(CACHE), wheel(CACHE), {})
        th.boot()
        prepare_testhost(th)
        print(f"test host {th.machine} up ({time.perf_counter() - began:.0f} s)", flush=True)
        local, inside = local_timer(config), testhost_timer(th)
        results = Results()
        for run in range(args.runs):
            timed(results, local, "direct cove", "start", [["cove", "start", ONE]])
            timed(results, local, "direct cove", "stop", [["cove", "stop", ONE]])
            ready, stopped = raw_direct(raw_argv)
            results.add("direct raw", "start", ready)
            results.add("direct raw", "stop", stopped)
            timed(results, inside, "systemd cove", "start", [["cove", "start", ONE]])
            timed(results, inside, "systemd cove", "stop", [["cove", "stop", ONE]])
            timed(results, inside, "systemd raw", "start", [["systemctl", "start", "raw-bench"]])
            timed(results, inside, "systemd raw", "stop", [["systemctl", "stop", "raw-bench"]])
            thirty(results, local, "direct 30")
            thirty(results, inside, "systemd 30")
            print(f"run {run + 1}/{args.runs} done ({time.perf_counter() - began:.0f} s)",
                  flush=True)  # fmt: skip
        report(args.runs, results)
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not skip this
        if th is not None:
            if th.leader is not None:
                for argv in (["cove", "terminate", ONE, *MANY], ["systemctl", "stop", "raw-bench"]):
                    with contextlib.suppress(Exception):
                        th.run(argv, timeout=120)
            th_clean = th.stop()
        left = cleanup(config)
        if not th_clean:
            print("note: the test host did not power off in time and was killed")
        nothing = (f"nothing left (containers, cgroups {GROUP} and {RAW_GROUP}, test host, "
                   f"mounts and files under {WORK})")  # fmt: skip
        print("cleanup: " + ("; ".join(f"left {x}" for x in left) or nothing))
        print(f"whole run: {time.perf_counter() - began:.0f} s")
    return 1 if left else 0


if __name__ == "__main__":
    sys.exit(main())
