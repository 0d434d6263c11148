#!/usr/bin/env python3
"""`cove render` of every container in a file declaring 1,000 containers with every option set.

Measures the whole command (process start to exit, output to /dev/null), which includes
parsing and validating the file, and reports the time per container. Target: under 1 s for
all 1,000. Needs no root: it renders only. `.venv/bin/python bench/render.py [--count N]`.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

COVE = str(Path(sys.executable).with_name("cove"))
TARGET = 1.0


def container(i: int) -> str:
    a, b = divmod(i, 250)
    return f"""
[containers.bench-{i:04d}]
image = "/srv/images/debian"
ephemeral = {"true" if i % 2 else "false"}
ephemeral-size = "512M"
timeout-start-sec = "2min"
timeout-stop-sec = 20
auto-start = true
restart-if-changed = false
additional-capabilities = ["CAP_NET_ADMIN", "CAP_SYS_TIME"]
allowed-devices = [{{ node = "/dev/fuse", modifier = "rw" }}]
enable-tun = true
private-users = "pick"
extra-flags = ["--setenv=GREETING=hello world {i}"]
copy-resolv-conf = false
tmpfs = ["/scratch:mode=0700"]
environment = {{ ROLE = "bench", INDEX = "{i}" }}
private-network = true
host-address = "10.{100 + a}.{b}.1"
local-address = "10.{100 + a}.{b}.2"
host-address6 = "fc00:{a}:{b}::1"
local-address6 = "fc00:{a}:{b}::2"
local-mac-address = "02:00:00:00:{a:02x}:{b:02x}"
forward-ports = [{{ host-port = {10000 + i}, container-port = 80 }}]
macvlans = ["eth1"]
interfaces = ["dummy{i}"]
[containers.bench-{i:04d}.bind-mounts."/srv/data {i}"]
host-path = "/srv/data/{i}"
is-read-only = false
[containers.bench-{i:04d}.extra-veths.xv{i}]
host-address = "10.{200 + a}.{b}.1"
local-address = "10.{200 + a}.{b}.2"
forward-ports = [{{ host-port = {20000 + i} }}]
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp, "cove.toml")
        config.write_text("".join(container(i) for i in range(args.count)))
        times = []
        for _ in range(args.runs):
            began = time.perf_counter()
            subprocess.run([COVE, "--config", str(config), "render"], check=True,
                           stdout=subprocess.DEVNULL)  # fmt: skip
            times.append(time.perf_counter() - began)
    total = statistics.median(times)
    print(
        f"cove render, {args.count} containers with every option: median {total:.3f} s "
        f"({min(times):.3f}-{max(times):.3f} s over {args.runs} runs), "
        f"{total / args.count * 1000:.2f} ms per container; target < {TARGET:.0f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
