#!/usr/bin/env python3
"""Cold start of everyday commands, and `cove import-nixos` of 500 containers, in one run.

Median of RUNS runs each of `cove --help`, `cove list` (a file with 20 containers, none
running), `cove completion bash` and `cove import-nixos` on a 500-container NixOS JSON. Needs no
root. Run: `.venv/bin/python bench/cli.py [--runs N]`.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

COVE = str(Path(sys.executable).with_name("cove"))


def timed(argv: list[str], env: dict[str, str], runs: int) -> list[float]:
    samples = []
    for _ in range(runs):
        began = time.perf_counter()
        subprocess.run(
            argv, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        samples.append(time.perf_counter() - began)
    return samples


def nixos_json(count: int) -> dict[str, object]:
    return {
        f"c{i}": {
            "autoStart": i % 2 == 0,
            "bindMounts": {f"/srv/{i}": {"hostPath": f"/data/{i}", "isReadOnly": False,
                                          "mountPoint": f"/srv/{i}"}},
            "config": {"services": {"nginx": {"enable": True}}},
            "privateNetwork": True,
            "hostAddress": f"10.{i // 250}.{i % 250}.1",
            "localAddress": f"10.{i // 250}.{i % 250}.2",
            "forwardPorts": [{"containerPort": 80, "hostPort": 10000 + i, "protocol": "tcp"}],
            "timeoutStartSec": "1min",
        }
        for i in range(count)
    }  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=21)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp, "cove.toml")
        config.write_text(f'[host]\nstate-dir = "{tmp}/s"\nruntime-dir = "{tmp}/r"\n'
                          + "".join(f"[containers.c{i}]\n" for i in range(20)))  # fmt: skip
        source = Path(tmp, "containers.json")
        source.write_text(json.dumps(nixos_json(500)))
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "COVE_CONFIG": str(config)}
        cases = {
            "cove --help": [COVE, "--help"],
            "cove list": [COVE, "list"],
            "cove completion bash": [COVE, "completion", "bash"],
            "cove import-nixos (500 containers)": [COVE, "import-nixos", str(source), "-o",
                                                   str(Path(tmp, "out.toml"))],
        }  # fmt: skip
        for label, argv in cases.items():
            samples = timed(argv, env, args.runs)
            print(f"{label}: median {statistics.median(samples) * 1000:.0f} ms "
                  f"({min(samples) * 1000:.0f}-{max(samples) * 1000:.0f} ms, "
                  f"{args.runs} runs)")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
