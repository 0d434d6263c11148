"""`cove logs` on the direct backend: a container's console log, kept on the host after it
stopped (ephemeral containers included): this run's and the previous run's, until destroy."""

from __future__ import annotations

import os
import sys
import time
from collections import deque
from pathlib import Path
from typing import BinaryIO

FOLLOW_TICK = 0.2


def show(path: Path, lines: int | None, follow: bool) -> int:
    """Print the last `lines` lines (all with None), then, with `follow`, what is appended, across
    the log being started anew by a restart, until interrupted."""
    previous = path.with_name(path.name + ".1")
    if not path.exists() and not previous.exists():
        print(f"cove: no console log at {path}", file=sys.stderr)
        return 1
    out = sys.stdout.buffer
    try:
        position, inode = _print_tail(path, lines, out)
        while follow:
            time.sleep(FOLLOW_TICK)
            position, inode = _print_new(path, position, inode, out)
    except KeyboardInterrupt:
        return 0
    return 0


def _print_tail(path: Path, lines: int | None, out: BinaryIO) -> tuple[int, int]:
    try:
        with open(path, "rb") as f:
            kept = deque(f, maxlen=lines) if lines is not None else list(f)
            _write(out, b"".join(kept))
            return f.tell(), os.fstat(f.fileno()).st_ino
    except FileNotFoundError:
        return 0, 0


def _print_new(path: Path, position: int, inode: int, out: BinaryIO) -> tuple[int, int]:
    try:
        with open(path, "rb") as f:
            now = os.fstat(f.fileno()).st_ino
            if now != inode:  # a new run began: its log starts from the top
                position = 0
            f.seek(position)
            _write(out, f.read())
            return f.tell(), now
    except FileNotFoundError:
        return position, inode


def _write(out: BinaryIO, data: bytes) -> None:
    if data:
        out.write(data)
        out.flush()
