"""Start/stop cycles of one container, watching for leaks: the soak of bench/soak.py, and
its 30-cycle version in the tests."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Soak:
    """What N cycles measured: seconds per cycle, and the supervisor's open files and
    resident memory (kB) seen while the container ran."""

    cycles: list[float] = field(default_factory=list)
    fds: list[int] = field(default_factory=list)
    rss_kb: list[int] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)


def supervisor_of(runtime_dir: Path, name: str) -> int | None:
    try:
        pid = json.loads((runtime_dir / name / "status.json").read_text())["supervisor"]
    except (OSError, ValueError, KeyError):
        return None
    return pid if isinstance(pid, int) else None


def process_usage(pid: int) -> tuple[int, int] | None:
    """(open file descriptors, resident kB) of a process, or None once it is gone."""
    try:
        fds = len(os.listdir(f"/proc/{pid}/fd"))
        with open(f"/proc/{pid}/status") as f:
            rss = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
    except (OSError, StopIteration):
        return None
    return fds, rss


def soak(cove: Sequence[str], env: dict[str, str], name: str, runs: int, runtime_dir: Path) -> Soak:
    result = Soak()
    for i in range(runs):
        began = time.perf_counter()
        started = subprocess.run([*cove, "start", name], env=env, capture_output=True, text=True)
        if started.returncode != 0:
            result.failures.append(f"cycle {i} start: {started.stderr.strip()}")
            continue
        pid = supervisor_of(runtime_dir, name)
        usage = process_usage(pid) if pid else None
        if usage:
            result.fds.append(usage[0])
            result.rss_kb.append(usage[1])
        stopped = subprocess.run([*cove, "stop", name], env=env, capture_output=True, text=True)
        if stopped.returncode != 0:
            result.failures.append(f"cycle {i} stop: {stopped.stderr.strip()}")
        result.cycles.append(time.perf_counter() - began)
    return result
