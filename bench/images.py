#!/usr/bin/env python3
"""Recipe image build time, and ephemeral start-to-ready from a small and a 1 GB larger image,
against raw `systemd-nspawn --ephemeral`, in one run.

Build: `cove image build debian:bookworm` cold (once, into a fresh empty image store under
/var/tmp/cove-bench-images that is removed at the end; about 40 s and a download from
deb.debian.org) and cached (the same call again on the same store, every run).

Start: a booted ephemeral container (`boot = true`, `ephemeral = true`) timed by `cove start`
(process start to exit, which is when the guest is ready), from the built tree declared as a
directory image, and from a copy of that tree padded with 1,000 files of 1 MiB under
/opt/padding (made with `cp -a --reflink=auto`, kept under /var/tmp/cove-bench-images for the
next run while the image's identity is the same). Each container is stopped by `cove stop`
after its measurement; stop times are reported apart. Beside them, raw `systemd-nspawn
--ephemeral --boot --notify-ready=yes --keep-unit --register=no` on the padded tree (with the
console, journal, kill signal, resolv.conf and firstboot arguments cove passes too), launched
from its own cgroup and timed from launch to READY=1 on a notify socket bound here: without
snapshots (ext4) it copies the whole tree before booting, and removes the copy at stop. Runs
alternate so every case sees the same machine.

As root: `.venv/bin/python bench/images.py [--runs N] [--skip-cold [--store DIR]]`. With
`--skip-cold` nothing is built cold: the image comes from an existing store (default the
tests' store, $COVE_TEST_CACHE/images, i.e. /var/cache/cove-test/images), built there first
if it lacks it.
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
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.common import host_table  # noqa: E402
from cove import cgroups, quickstart  # noqa: E402

ROOT = Path("/var/tmp/cove-bench-images")
WORK = ROOT / "work"
COLD_STORE = ROOT / "cold-store"
CACHE = Path(os.environ.get("COVE_TEST_CACHE", "/var/cache/cove-test"))
COVE = str(Path(sys.executable).with_name("cove"))
NSPAWN = shutil.which("systemd-nspawn") or "/usr/bin/systemd-nspawn"
GROUP = "cove-bench-images"
RECIPE = "debian:bookworm"
CONTAINERS = ("bench-built", "bench-padded")
PAD_FILES, PAD_BYTES = 1000, 2**20
TARGET = 1.2  # cove start on the padded tree / on the tree as built
ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "SYSTEMD_NSPAWN_UNIFIED_HIERARCHY": "1"}


def write_config(store: Path, built: Path | None = None, padded: Path | None = None) -> Path:
    config = WORK / "cove.toml"
    text = host_table(WORK, GROUP, f'image-dir = "{store}"')
    for name, image in zip(CONTAINERS, (built, padded), strict=True):
        if image is not None:
            text += f'\n[containers.{name}]\nimage = "{image}"\nboot = true\nephemeral = true\n'
    config.write_text(text)
    return config


def cove(config: Path, *args: str) -> tuple[float, str]:
    """Seconds from process start to exit of one cove command, and what it printed. Output
    goes to files: a supervisor that outlived a pipe would keep the read waiting."""
    env = {"PATH": ENV["PATH"], "COVE_CONFIG": str(config)}
    out, err = WORK / "cove.out", WORK / "cove.err"
    with out.open("wb") as stdout, err.open("wb") as stderr:
        began = time.perf_counter()
        done = subprocess.run([COVE, *args], env=env, stdout=stdout, stderr=stderr, check=False)
        took = time.perf_counter() - began
    if done.returncode != 0:
        raise RuntimeError(
            f"cove {' '.join(args)} exited {done.returncode}:\n{err.read_text()[-3000:]}"
        )
    return took, out.read_text()


def build(config: Path) -> tuple[float, Path]:
    """`cove image build RECIPE`: its time and the tree it names."""
    took, printed = cove(config, "image", "build", RECIPE)
    return took, Path(printed.split(": ", 1)[1].strip())


def padded_tree(source: Path) -> tuple[Path, float | None]:
    """A copy of `source` with PAD_FILES files of PAD_BYTES in /opt/padding, kept for the next
    run under a name holding the source's identity; the seconds it took, None if reused."""
    target = ROOT / f"padded-{source.name}-{PAD_FILES}x{PAD_BYTES}"
    if target.is_dir():
        return target, None
    for stale in ROOT.glob("padded-*"):  # another identity: a gigabyte nobody will reuse
        remove(stale)
    tmp = ROOT / f".{target.name}.tmp"
    remove(tmp)
    began = time.perf_counter()
    subprocess.run(["cp", "-a", "--reflink=auto", str(source), str(tmp)], check=True)
    padding = tmp / "opt/padding"
    padding.mkdir(parents=True)
    for i in range(PAD_FILES):
        (padding / f"{i:04d}").write_bytes(os.urandom(PAD_BYTES))
    os.rename(tmp, target)
    return target, time.perf_counter() - began


# -- the raw comparison ------------------------------------------------------------------------
def nspawn_ephemeral(tree: Path) -> tuple[float, float]:
    """Seconds from launch to READY=1 of `systemd-nspawn --ephemeral` on `tree`, and from
    SIGTERM to its exit (the guest's shutdown and the removal of its copy)."""
    notify_path = WORK / "nspawn-notify"
    with contextlib.suppress(FileNotFoundError):
        notify_path.unlink()
    argv = [NSPAWN, "--quiet", "--ephemeral", "--boot", "--notify-ready=yes", "--keep-unit",
            "--register=no", f"--directory={tree}", "--machine=bench-nspawn",
            "--link-journal=no", "--console=read-only", "--kill-signal=SIGRTMIN+3",
            "--resolv-conf=copy-host", "--", "systemd.firstboot=off"]  # fmt: skip
    group = cgroups.Group(f"{GROUP}/nspawn")
    group.create()
    log = WORK / "nspawn.log"
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
                            f"systemd-nspawn exited {child.returncode} before READY=1:\n"
                            + log.read_text(errors="replace")[-3000:]
                        ) from None
                    if time.perf_counter() - began > 300:
                        raise RuntimeError("systemd-nspawn: no READY=1 in 300 s") from None
                    continue
                if "READY=1" in message.splitlines():
                    ready = time.perf_counter() - began
            stopping = time.perf_counter()
            child.send_signal(signal.SIGTERM)
            while child.poll() is None:  # nspawn blocks if nobody reads its notify socket
                with contextlib.suppress(TimeoutError):
                    notify.recv(4096)
                if time.perf_counter() - stopping > 120:
                    raise RuntimeError("systemd-nspawn did not exit within 120 s of SIGTERM")
            stopped = time.perf_counter() - stopping
        finally:
            group.kill()
            child.wait()
            group.wait_empty(10)
            group.remove()
            remove_ephemeral_copies()
    return ready, stopped


def remove_ephemeral_copies() -> None:
    """What a killed `nspawn --ephemeral` leaves beside its tree (`.#machine.NAMExxxx`)."""
    for leftover in ROOT.glob(".#*"):
        remove(leftover)


# -- the run -----------------------------------------------------------------------------------
def remove(path: Path) -> None:
    subprocess.run(["rm", "-rf", "--one-file-system", str(path)], check=False)


def mib(tree: Path) -> int:
    return int(subprocess.run(["du", "-sm", str(tree)], capture_output=True, text=True,
                              check=True).stdout.split()[0])  # fmt: skip


def filesystem(path: str) -> str:
    magic = subprocess.run(["stat", "-f", "-c", "%T", path], capture_output=True, text=True)
    mount = subprocess.run(["findmnt", "-n", "-o", "FSTYPE", "--target", path],
                           capture_output=True, text=True)  # fmt: skip
    return f"{mount.stdout.strip() or '?'} (stat -f: {magic.stdout.strip() or '?'})"


def spread(values: list[float]) -> str:
    return f"{min(values):.3f}-{max(values):.3f}s"


def report(runs: int, cold: float | None, times: Series, stops: Series) -> None:
    med = {case: statistics.median(values) for case, values in times.items()}
    print(f"{'case':<32}{'median':>9}  {'range':<15}{'stop median':>12}  (runs: {runs})")
    if cold is not None:
        print(f"{'image build, cold':<32}{cold:>8.3f}s  (once)")
    for case, values in times.items():
        stop = f"{statistics.median(stops[case]):>11.3f}s" if case in stops else ""
        print(f"{case:<32}{med[case]:>8.3f}s  {spread(values):<15}{stop}".rstrip())
    print("(stop: `cove stop` to exit; nspawn: SIGTERM to exit, removing its copy included)")
    sizes = med["cove start, padded"] / med["cove start, as built"]
    versus = med["cove start, padded"] / med["nspawn --ephemeral, padded"]
    print(f"{'ratio cove padded / as built':<45}{sizes:>6.2f}  (target <= {TARGET})")
    print(f"{'ratio cove padded / nspawn --ephemeral padded':<45}{versus:>6.2f}")
    cached = med["image build, cached"] * 1000
    against = f"against {cold:.1f} s cold" if cold is not None else "(cold build skipped)"
    print(f"build: cached {cached:.0f} ms {against}")
    verdict = "met" if sizes <= TARGET else "missed"
    print(f"image size: 1 GB more costs cove {(sizes - 1) * 100:+.0f}% start-to-ready "
          f"({med['cove start, as built']:.3f} -> {med['cove start, padded']:.3f} s); "
          f"target <= {TARGET}: {verdict}")  # fmt: skip
    print(
        f"nspawn --ephemeral: cove is {1 / versus:.1f}x faster to ready on the padded tree "
        f"({med['cove start, padded']:.3f} vs {med['nspawn --ephemeral, padded']:.3f} s)"
    )


Case = Callable[[], tuple[float, float | None]]  # start-to-ready (or build) and stop seconds
Series = dict[str, list[float]]


def measure(runs: int, cases: dict[str, Case]) -> tuple[Series, Series]:
    """Every case once per run, in turn; the times of each, and the stop times of those that
    have one."""
    times: Series = {case: [] for case in cases}
    stops: Series = {}
    for _ in range(runs):
        for case, run in cases.items():
            took, stop = run()
            times[case].append(took)
            if stop is not None:
                stops.setdefault(case, []).append(stop)
    return times, stops


def cleanup() -> list[str]:
    """Stop whatever this run started; what is left behind, if anything."""
    config = WORK / "cove.toml"
    if config.exists():
        env = {"PATH": ENV["PATH"], "COVE_CONFIG": str(config)}
        subprocess.run([COVE, "terminate", *CONTAINERS], env=env, check=False,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    group = cgroups.Group(GROUP)
    group.kill()
    group.wait_empty(10)
    group.remove()
    quickstart.forget_all(str(config))
    remove_ephemeral_copies()
    for path in (WORK, COLD_STORE, *ROOT.glob(".padded-*.tmp")):
        remove(path)
    left = [f"cgroup {GROUP}"] if group.exists() else []
    mounts = subprocess.run(["findmnt", "-rn", "-o", "TARGET"], capture_output=True, text=True)
    left += [f"mount {m}" for m in mounts.stdout.splitlines() if m.startswith(str(ROOT))]
    left += [f"path {p}" for p in (WORK, COLD_STORE) if p.exists()]
    return left


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--skip-cold", action="store_true", help="reuse an existing store")
    parser.add_argument("--store", type=Path, help=f"with --skip-cold (default {CACHE}/images)")
    args = parser.parse_args()
    if args.store and not args.skip_cold:
        parser.error("--store goes with --skip-cold")
    if os.geteuid() != 0:
        sys.exit("bench/images.py starts real containers: run it as root")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so that the cleanup runs
    began = time.perf_counter()
    try:
        cleanup()  # what a killed run left
        WORK.mkdir(parents=True)
        print(f"/var/tmp is {filesystem('/var/tmp')}; benchmark files in {ROOT}", flush=True)
        cold = None
        store = (args.store or CACHE / "images") if args.skip_cold else COLD_STORE
        config = write_config(store)
        if args.skip_cold:
            took, built = build(config)
            how = "it held the image" if took < 5 else f"it lacked the image: built in {took:.1f} s"
            print(f"--skip-cold: image store {store} ({how})", flush=True)
        else:
            print(f"building {RECIPE} cold into {store} (about 40 s)...", flush=True)
            cold, built = build(config)
        padded, made = padded_tree(built)
        how = "reused" if made is None else f"made in {made:.1f} s"
        print(f"image {built.name}: {mib(built)} MiB as built; "
              f"padded copy {mib(padded)} MiB ({how})", flush=True)  # fmt: skip
        subprocess.run(["sync"], check=True)  # no writeback of the copy during the timings
        config = write_config(store, built, padded)

        def cove_case(name: str) -> Case:
            def run() -> tuple[float, float]:
                took, _ = cove(config, "start", name)
                stopped, _ = cove(config, "stop", name)
                return took, stopped

            return run

        times, stops = measure(
            args.runs,
            {
                "image build, cached": lambda: (build(config)[0], None),
                "cove start, as built": cove_case("bench-built"),
                "cove start, padded": cove_case("bench-padded"),
                "nspawn --ephemeral, padded": lambda: nspawn_ephemeral(padded),
            },
        )
        report(args.runs, cold, times, stops)
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not skip this
        left = cleanup()
        print("cleanup: " + ("; ".join(f"left {x}" for x in left) or "nothing left (containers, "
              f"cgroup {GROUP}, mounts under {ROOT}, work dir and cold store)"))  # fmt: skip
        print(f"whole run: {time.perf_counter() - began:.0f} s")
    return 1 if left else 0


if __name__ == "__main__":
    sys.exit(main())
