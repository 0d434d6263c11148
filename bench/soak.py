#!/usr/bin/env python3
"""Soak: start/stop cycles on the direct backend, in one run.

- an ephemeral booted host-image container;
- a persistent busybox container with a routed veth and a forwarded port, inside a network
  namespace of the bench's own.

Reports cycles per minute, the spread of cycle times, the supervisor's open files and memory,
and whether `cove doctor` finds anything afterwards. `--backend systemd` runs the same cycles
inside a test host (tests/testhost.py), where the containers are units. Run as root:
`.venv/bin/python bench/soak.py [--cycles N] [--backend direct|systemd]` (default 300, direct).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import textwrap
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.common import discard, host_table  # noqa: E402
from tests.images import busybox_tree  # noqa: E402
from tests.soak import Soak, process_usage, soak, supervisor_of  # noqa: E402

WORK = Path("/var/tmp/cove-bench-soak")
CACHE = Path(os.environ.get("COVE_TEST_CACHE", "/var/cache/cove-test"))
COVE = str(Path(sys.executable).with_name("cove"))
GROUP = "cove-bench-soak"
NETNS = "bench-soak-host"  # not cove-*: that prefix is for containers' namespaces


def write_config(busybox: Path) -> Path:
    config = WORK / "cove.toml"
    config.write_text(
        host_table(WORK, GROUP)
        + textwrap.dedent(f"""\
        [containers.soak-boot]
        ephemeral = true

        [containers.soak-net]
        image = "{busybox}"
        boot = false
        command = ["/bin/httpd", "-f", "-p", "80"]
        private-network = true
        host-address = "10.90.0.1"
        local-address = "10.90.0.2"
        forward-ports = [{{ host-port = 8090, container-port = 80 }}]
        """)
    )
    return config


def report(label: str, result: Soak) -> None:
    cycles = result.cycles
    if not cycles:
        print(f"{label}: no cycle completed; failures: {result.failures[:3]}")
        return
    q = statistics.quantiles(cycles, n=20)
    print(f"{label}: {len(cycles)} cycles in {sum(cycles):.0f} s = "
          f"{60 * len(cycles) / sum(cycles):.0f} cycles/min; cycle median "
          f"{statistics.median(cycles):.3f} s, p5 {q[0]:.3f} s, p95 {q[-1]:.3f} s, max "
          f"{max(cycles):.3f} s; failures {len(result.failures)}")  # fmt: skip
    if result.fds:
        print(f"  supervisor: open files first {result.fds[0]}, last {result.fds[-1]}, max "
              f"{max(result.fds)}; resident memory median "
              f"{statistics.median(result.rss_kb) / 1024:.1f} MiB, first "
              f"{result.rss_kb[0] / 1024:.1f}, last {result.rss_kb[-1] / 1024:.1f}")  # fmt: skip


# Runs inside the test host: N start/stop cycles of one container, as JSON seconds.
INSIDE = """
import json, subprocess, sys, time
name, runs = sys.argv[1], int(sys.argv[2])
cycles, failures = [], []
for i in range(runs):
    began = time.perf_counter()
    for verb in ("start", "stop"):
        done = subprocess.run(["cove", verb, name], capture_output=True, text=True)
        if done.returncode:
            failures.append(f"cycle {i} {verb}: {done.stderr.strip()}")
    cycles.append(time.perf_counter() - began)
print(json.dumps({"cycles": cycles, "failures": failures}))
"""


def systemd_soak(cycles: int) -> None:
    import json
    import secrets

    from tests.testhost import TestHost, tree, wheel

    th = TestHost(f"soak{secrets.token_hex(2)}", tree(CACHE), wheel(CACHE),
                  {"/srv/images/busybox": busybox_tree(CACHE)})  # fmt: skip
    try:
        th.boot()
        th.write("/etc/cove/cove.toml", write_config(Path("/srv/images/busybox"))
                 .read_text().split("\n\n", 1)[1])  # fmt: skip
        for label, name in (("ephemeral booted", "soak-boot"),
                            ("persistent veth + forward", "soak-net")):  # fmt: skip
            done = th.run(["python3", "-c", INSIDE, name, str(cycles)], check=True,
                          timeout=3600)  # fmt: skip
            data = json.loads(done.stdout)
            report(f"systemd, {label}", Soak(cycles=data["cycles"], failures=data["failures"]))
        doctor = th.run(["cove", "doctor"])
        print(f"cove doctor afterwards (test host): {doctor.stdout.strip()}")
    finally:
        th.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=300)
    parser.add_argument("--backend", choices=["direct", "systemd"], default="direct")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench/soak.py starts real containers: run it as root")
    if args.backend == "systemd":
        WORK.mkdir(parents=True, exist_ok=True)
        try:
            systemd_soak(args.cycles)
        finally:
            subprocess.run(["rm", "-rf", "--one-file-system", str(WORK)], check=False)
        return 0
    subprocess.run(["rm", "-rf", "--one-file-system", str(WORK)], check=False)
    WORK.mkdir(parents=True)
    config = write_config(busybox_tree(CACHE))
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "COVE_CONFIG": str(config)}
    subprocess.run(["ip", "netns", "add", NETNS], check=True)
    subprocess.run(["ip", "-n", NETNS, "link", "set", "lo", "up"], check=True)
    inside = ["nsenter", f"--net=/run/netns/{NETNS}", "--", COVE]
    try:
        report("ephemeral booted", soak([COVE], env, "soak-boot", args.cycles, WORK / "run"))
        report("persistent veth + forward",
               soak(inside, env, "soak-net", args.cycles, WORK / "run"))  # fmt: skip
        for name, argv in (("soak-boot", [COVE]), ("soak-net", inside)):
            subprocess.run([*argv, "start", name], env=env, check=True, capture_output=True)
            time.sleep(2)  # the supervisor has loaded all of cove by now
            pid = supervisor_of(WORK / "run", name)
            usage = process_usage(pid) if pid else None
            if usage:
                print(f"{name}: supervisor settled: {usage[0]} open files, "
                      f"{usage[1] / 1024:.1f} MiB resident")  # fmt: skip
            subprocess.run([*argv, "stop", name], env=env, check=True, capture_output=True)
        doctor = subprocess.run([*inside, "doctor"], env=env, capture_output=True, text=True)
        print(f"cove doctor afterwards: {doctor.stdout.strip()}")
    finally:
        subprocess.run([*inside, "terminate", "soak-boot", "soak-net"], env=env, check=False,
                       capture_output=True)  # fmt: skip
        subprocess.run(["ip", "netns", "delete", NETNS], check=False)
        discard(WORK, GROUP, config)
    return 0


if __name__ == "__main__":
    sys.exit(main())
