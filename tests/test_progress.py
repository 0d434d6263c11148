"""Build progress: one line rewritten in place on a terminal, plain milestone lines otherwise."""

from __future__ import annotations

import os
import pty
import sys

import pytest

from cove.images import Progress

LINES = [
    "I: Retrieving InRelease",
    "I: Retrieving Packages",
    "W: a warning",
    "I: Extracting base-files...",
    "I: Extracting libc6...",
    "I: Base system installed successfully.",
]


def test_plain_lines_when_not_a_terminal(capsys: pytest.CaptureFixture[str]) -> None:
    progress = Progress("debian:bookworm")
    for line in LINES:
        progress.step(line)
    progress.done()
    assert capsys.readouterr().err.splitlines() == [
        "cove:   I: Retrieving InRelease",  # once per phase, not once per package
        "cove:   I: Extracting base-files...",
        "cove:   I: Base system installed successfully.",
    ]


def test_one_line_rewritten_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    master, slave = pty.openpty()
    with open(slave, "w") as terminal:
        monkeypatch.setattr(sys, "stderr", terminal)
        progress = Progress("debian:bookworm")
        for line in LINES:
            progress.step(line)
        progress.done()
    shown = os.read(master, 65536).decode()
    os.close(master)
    assert "\n" not in shown
    updates = shown.split("\r\x1b[K")
    assert updates[0] == ""
    assert updates[-1] == ""  # cleared at the end: the next message starts on a clean line
    assert len(updates) == 7  # five steps and the clearing
    assert updates[1].startswith("cove: building debian:bookworm [")
    assert updates[1].endswith("] Retrieving InRelease")
