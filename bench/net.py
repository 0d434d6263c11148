#!/usr/bin/env python3
"""Start-to-ready of a booted host-image container with a routed dual-stack veth and two
forwarded ports, against the same container without a network and against raw
`systemd-nspawn --network-veth` on the same tree; and the host-side network setup alone.

Runs entirely inside a network namespace it makes (and removes), so nothing touches the
machine's own network. As root: `.venv/bin/python bench/net.py [--runs N]`.
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

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import start as startbench  # noqa: E402

from cove import cgroups, net, rootfs  # noqa: E402
from cove.config import load_config  # noqa: E402

NETNS = "bench-net-host"  # not cove-*: that prefix is for containers' namespaces


def write_config(work: Path) -> Path:
    config = work / "cove.toml"
    config.write_text(
        textwrap.dedent(f"""\
        [host]
        backend = "direct"
        state-dir = "{work}/state"
        runtime-dir = "{work}/run"
        log-dir = "{work}/log"
        cgroup = "{startbench.GROUP}"
        hosts-file = "{work}/hosts"

        [containers.bench-net]
        ephemeral = true
        private-network = true
        host-address = "10.99.0.1"
        local-address = "10.99.0.2"
        host-address6 = "fd99::1"
        local-address6 = "fd99::2"
        forward-ports = [{{ host-port = 8080, container-port = 80 }}, {{ host-port = 8443 }}]

        [containers.bench-plain]
        ephemeral = true
        """)
    )
    return config


def measure(runs: int) -> None:
    work = startbench.WORK
    config = write_config(work)
    host_base = rootfs.ensure_host_base(work / "images/host")
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "SYSTEMD_NSPAWN_UNIFIED_HIERARCHY": "1"}
    raw_argv = startbench.baseline_script(
        host_base,
        True,
        ["--machine=bench-rawnet", "--network-veth", "--link-journal=no", "--console=read-only",
         "--notify-ready=yes", "--boot", "systemd.firstboot=off"],
    )  # fmt: skip
    container = load_config(str(config)).containers["bench-net"]
    record = work / "net.json"
    times: dict[str, list[float]] = {"with network": [], "without": [], "raw --network-veth": []}
    setup: list[float] = []
    for _ in range(runs):
        for label, name in (("with network", "bench-net"), ("without", "bench-plain")):
            times[label].append(startbench.cove(config, "start", name))
            startbench.cove(config, "stop", name)
        times["raw --network-veth"].append(startbench.baseline(raw_argv, env))
        began = time.perf_counter()
        net.setup(container, record)
        setup.append(time.perf_counter() - began)
        net.teardown(container, record)
    for label, values in times.items():
        print(f"{label:<20} median {statistics.median(values):.3f} s "
              f"({min(values):.3f}-{max(values):.3f} s)")  # fmt: skip
    print(f"{'network setup alone':<20} median {statistics.median(setup) * 1000:.1f} ms "
          f"({min(setup) * 1000:.1f}-{max(setup) * 1000:.1f} ms; namespace, veth, 2 "
          "addresses each side, routes, 4 nft rules)")  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--inside", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench/net.py starts real containers: run it as root")
    if args.inside:
        measure(args.runs)
        return 0
    subprocess.run(["ip", "netns", "add", NETNS], check=True)
    try:
        subprocess.run(["ip", "-n", NETNS, "link", "set", "lo", "up"], check=True)
        startbench.WORK.mkdir(parents=True, exist_ok=True)
        return subprocess.run(
            ["nsenter", f"--net=/run/netns/{NETNS}", "--", sys.executable, __file__, "--inside",
             "--runs", str(args.runs)]
        ).returncode  # fmt: skip
    finally:
        config = startbench.WORK / "cove.toml"
        if config.exists():
            subprocess.run(["nsenter", f"--net=/run/netns/{NETNS}", "--", startbench.COVE,
                            "--config", str(config), "terminate", "bench-net", "bench-plain"],
                           check=False, capture_output=True)  # fmt: skip
        subprocess.run(["ip", "netns", "delete", NETNS], check=False)
        group = cgroups.Group(startbench.GROUP)
        group.kill()
        group.wait_empty(10)
        group.remove()
        subprocess.run(["rm", "-rf", "--one-file-system", str(startbench.WORK)], check=False)


if __name__ == "__main__":
    sys.exit(main())
