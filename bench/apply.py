#!/usr/bin/env python3
"""`cove plan` and `cove apply` at scale, in one run.

- `cove plan` over 1,000 declared containers (applied before, so the plan is empty): none
  running, then 50 of them running.
- `cove apply` of a file with 20 new ephemeral auto-start containers, against 20 sequential
  `cove start`s of the same containers.

Containers are busybox command containers (the tests' image). Run as root:
`.venv/bin/python bench/apply.py [--runs N]`.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.common import discard, host_table  # noqa: E402
from tests.images import busybox_tree  # noqa: E402

WORK = Path("/var/tmp/cove-bench-apply")
CACHE = Path(os.environ.get("COVE_TEST_CACHE", "/var/cache/cove-test"))
COVE = str(Path(sys.executable).with_name("cove"))
GROUP = "cove-bench-apply"
MANY, RUNNING, NEW = 1000, 50, 20


def write(config: Path, image: Path, names: list[str], auto: set[str]) -> None:
    head = host_table(WORK, GROUP)
    body = "".join(
        f'[containers.{n}]\nimage = "{image}"\nboot = false\nephemeral = true\n'
        f'command = ["/bin/sleep", "1000"]\n' + ("auto-start = true\n" if n in auto else "")
        for n in names
    )
    config.write_text(head + body)


def cove(config: Path, *args: str) -> float:
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "COVE_CONFIG": str(config)}
    began = time.perf_counter()
    subprocess.run([COVE, *args], env=env, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - began


def median_ms(samples: list[float]) -> str:
    return f"{statistics.median(samples) * 1000:.0f} ms ({min(samples) * 1000:.0f}-" \
           f"{max(samples) * 1000:.0f})"  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench/apply.py starts real containers: run it as root")
    subprocess.run(["rm", "-rf", "--one-file-system", str(WORK)], check=False)
    WORK.mkdir(parents=True)
    image = busybox_tree(CACHE)
    config = WORK / "cove.toml"
    names = [f"c{i:04d}" for i in range(MANY)]
    try:
        write(config, image, names, set())
        cove(config, "apply")
        idle = [cove(config, "plan") for _ in range(args.runs)]
        print(f"cove plan, {MANY} declared, none running: {median_ms(idle)}")
        running = set(names[:RUNNING])
        write(config, image, names, running)
        cove(config, "apply")
        busy = [cove(config, "plan") for _ in range(args.runs)]
        print(f"cove plan, {MANY} declared, {RUNNING} running: {median_ms(busy)}")
        write(config, image, [], set())
        cove(config, "apply", "--prune")

        fresh = [f"n{i:02d}" for i in range(NEW)]
        applied, started = [], []
        for _ in range(args.runs):
            write(config, image, fresh, set(fresh))
            applied.append(cove(config, "apply"))
            cove(config, "stop", *fresh)
            began = time.perf_counter()
            for n in fresh:
                cove(config, "start", n)
            started.append(time.perf_counter() - began)
            write(config, image, [], set())
            cove(config, "apply", "--prune")
        a, s = statistics.median(applied), statistics.median(started)
        print(f"cove apply, {NEW} new ephemeral auto-start containers: {a:.2f} s; "
              f"{NEW} sequential cove start: {s:.2f} s (ratio {a / s:.2f})")  # fmt: skip
    finally:
        if config.exists():
            write(config, image, [], set())
            subprocess.run([COVE, "--config", str(config), "apply", "--prune"], check=False,
                           capture_output=True)  # fmt: skip
        discard(WORK, GROUP, config)
    return 0


if __name__ == "__main__":
    sys.exit(main())
