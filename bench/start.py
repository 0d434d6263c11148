#!/usr/bin/env python3
"""Start-to-ready time of cove against raw systemd-nspawn, in one run (DESIGN §10).

For each case the same root is started RUNS times by `cove start` (process start to exit,
which is when the container is ready) and by the pinned baseline: `systemd-nspawn` with the
same root mode (an overlay with its upper layer on a tmpfs, assembled in a private mount
namespace), `--notify-ready`, started from its own cgroup, timed from launch to READY=1 on its
notify socket. Runs alternate so both sides see the same machine. Also: `cove list` cold start.

Cases: `host` (booted host-image container, ephemeral) and `busybox` (a command container on a
busybox directory image, ephemeral; after the first run cove starts it from its launch card,
see src/cove/quickstart.py); and the busybox container with `private-users = "pick"` against the
same start path without it. Run as root: `.venv/bin/python bench/start.py [--runs N]`.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.common import discard, host_table  # noqa: E402
from cove import cgroups, rootfs  # noqa: E402
from tests.images import busybox_tree  # noqa: E402

WORK = Path("/var/tmp/cove-bench")
CACHE = Path(os.environ.get("COVE_TEST_CACHE", "/var/cache/cove-test"))
COVE = str(Path(sys.executable).with_name("cove"))
NSPAWN = shutil.which("systemd-nspawn") or "/usr/bin/systemd-nspawn"
GROUP = "cove-bench"
TARGET = 1.3


def write_config(busybox: Path) -> Path:
    config = WORK / "cove.toml"
    config.write_text(
        host_table(WORK, GROUP)
        + textwrap.dedent(f"""\
        [containers.bench-host]
        ephemeral = true

        [containers.bench-busybox]
        image = "{busybox}"
        boot = false
        command = ["/bin/sleep", "1000"]
        ephemeral = true

        [containers.bench-shifted]
        image = "{busybox}"
        boot = false
        command = ["/bin/sleep", "1000"]
        ephemeral = true
        private-users = "pick"
        """)
    )
    return config


def cove(config: Path, *args: str) -> float:
    """Seconds from process start to exit of one cove command."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "COVE_CONFIG": str(config)}
    began = time.perf_counter()
    quiet = subprocess.DEVNULL if "--debug" in args else None  # its trace is not the point
    subprocess.run([COVE, *args], env=env, check=True, stdout=subprocess.DEVNULL, stderr=quiet)
    return time.perf_counter() - began


def _debug_start(config: Path) -> float:
    """bench-busybox started the normal way (`--debug` never takes the launch card)."""
    time.sleep(SETTLE)
    took = cove(config, "--debug", "start", "bench-busybox")
    cove(config, "stop", "bench-busybox")
    return took


# -- the raw baseline --------------------------------------------------------------------------
def baseline_script(lower: Path, host_usr: bool, nspawn_args: list[str]) -> list[str]:
    """unshare + sh that mounts the same overlay cove would, then execs nspawn."""
    root, scratch = WORK / "base-root", WORK / "base-scratch"
    root.mkdir(exist_ok=True)
    scratch.mkdir(exist_ok=True)
    steps = [
        f"mount -t tmpfs -o mode=0700,size=1G tmpfs {scratch}",
        f"mkdir {scratch}/upper {scratch}/work",
        f"mount -t overlay overlay -o lowerdir={lower},upperdir={scratch}/upper,"
        f"workdir={scratch}/work {root}",
    ]
    if host_usr:
        steps.append(f"mount --bind /usr {root}/usr && mount -o remount,bind,ro {root}/usr")
    command = " && ".join(steps) + ' && exec "$@"'
    argv = [NSPAWN, "--quiet", "--keep-unit", "--register=no", f"--directory={root}"]
    return [
        "unshare",
        "--mount",
        "--propagation=slave",
        "--",
        "sh",
        "-c",
        command,
        "sh",
        *argv,
        *nspawn_args,
    ]


def baseline(argv: list[str], env: dict[str, str]) -> float:
    """Seconds from launch to READY=1, then a clean stop (not timed)."""
    notify_path = WORK / "base-notify"
    with contextlib.suppress(FileNotFoundError):
        notify_path.unlink()
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(notify_path))
    group = cgroups.Group(f"{GROUP}/baseline")
    group.create()
    began = time.perf_counter()
    child = subprocess.Popen(
        argv,
        env={**env, "NOTIFY_SOCKET": str(notify_path)},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=lambda: group.join(os.getpid()),
    )
    ready = None
    notify.settimeout(30)
    while ready is None:
        message = notify.recv(4096).decode(errors="replace")
        if "READY=1" in message.splitlines():
            ready = time.perf_counter() - began
    child.send_signal(signal.SIGTERM)
    notify.setblocking(False)
    while child.poll() is None:  # nspawn blocks if nobody reads its notify socket
        with contextlib.suppress(BlockingIOError):
            notify.recv(4096)
        time.sleep(0.005)
    notify.close()
    group.kill()
    group.wait_empty(10)
    group.remove()
    return ready


# -- the run -----------------------------------------------------------------------------------
# Before each timed start: moving a process into a cgroup waits for an RCU grace period
# (5-30 ms here) unless another move happened a moment before. Without a pause the baseline,
# which ran right after `cove stop` (cgroups emptied and removed), often skipped that wait while
# cove never did; after it, both start from the same quiet state, as a start on an idle host does.
SETTLE = 0.2


def measure(runs: int, pairs: dict[str, tuple[Callable[[], float], Callable[[], float]]]) -> None:
    results: dict[str, tuple[list[float], list[float]]] = {k: ([], []) for k in pairs}
    for _ in range(runs):
        for case, (cove_run, raw_run) in pairs.items():
            time.sleep(SETTLE)
            results[case][0].append(cove_run())
            time.sleep(SETTLE)
            results[case][1].append(raw_run())
    print(f"{'case':<10}{'cove median':>13}{'raw median':>13}{'ratio':>8}  (runs: {runs})")
    worst = 0.0
    for case, (mine, raw) in results.items():
        ratio = statistics.median(mine) / statistics.median(raw)
        worst = max(worst, ratio)
        print(
            f"{case:<10}{statistics.median(mine):>12.3f}s{statistics.median(raw):>12.3f}s"
            f"{ratio:>8.2f}  cove {min(mine):.3f}-{max(mine):.3f}s, "
            f"raw {min(raw):.3f}-{max(raw):.3f}s"
        )
    print(f"worst ratio {worst:.2f} (target <= {TARGET})")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench/start.py starts real containers: run it as root")
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    busybox = busybox_tree(CACHE)
    config = write_config(busybox)
    host_base = rootfs.ensure_host_base(WORK / "images/host")
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "SYSTEMD_NSPAWN_UNIFIED_HIERARCHY": "1"}

    boot_args = ["--machine=bench-raw", "--link-journal=no", "--console=read-only"]
    boot_args += ["--notify-ready=yes", "--boot", "systemd.firstboot=off"]
    host_raw = baseline_script(host_base, True, boot_args)
    cmd_args = ["--machine=bench-rawbb", "--link-journal=no", "--console=pipe"]
    cmd_args += ["--notify-ready=no", "--as-pid2", "/bin/sleep", "1000"]
    busybox_raw = baseline_script(busybox, False, cmd_args)

    def cove_case(name: str) -> Callable[[], float]:
        def run() -> float:
            took = cove(config, "start", name)
            cove(config, "stop", name)
            return took

        return run

    try:
        measure(
            args.runs,
            {
                "host": (cove_case("bench-host"), lambda: baseline(host_raw, env)),
                "busybox": (cove_case("bench-busybox"), lambda: baseline(busybox_raw, env)),
            },
        )
        shifted_pairs = []
        for _ in range(args.runs):  # private users: the normal path, never a launch card
            time.sleep(SETTLE)
            shifted_pairs.append((cove_case("bench-shifted")(), _debug_start(config)))
        shifted = statistics.median(p[0] for p in shifted_pairs)
        plain = statistics.median(p[1] for p in shifted_pairs)
        print(f'busybox with private-users = "pick": median {shifted:.3f}s, without it on the '
              f"same (normal, uncarded) path {plain:.3f}s")  # fmt: skip
        lists = [cove(config, "list") for _ in range(11)]
        print(f"cove list cold start: median {statistics.median(lists) * 1000:.0f} ms "
              f"({min(lists) * 1000:.0f}-{max(lists) * 1000:.0f} ms over {len(lists)} runs; "
              "target < 150 ms)")  # fmt: skip
    finally:
        with contextlib.suppress(subprocess.CalledProcessError):
            cove(config, "terminate", "bench-host", "bench-busybox", "bench-shifted")
        discard(WORK, GROUP, config)
    return 0


if __name__ == "__main__":
    sys.exit(main())
