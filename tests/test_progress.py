"""Build progress: one line rewritten in place on a terminal, plain milestone lines otherwise."""

from __future__ import annotations

import os
import pty
import sys
from pathlib import Path

import pytest

from cove.images import Progress


def drain(master: int) -> str:
    """What the terminal got, read while its slave side is still open (Linux may drop what is
    left in a pty once the slave closes)."""
    import select

    chunks = []
    while select.select([master], [], [], 0.2)[0]:
        chunks.append(os.read(master, 65536))
    return b"".join(chunks).decode()


LINES = [
    "I: Retrieving InRelease",
    "I: Retrieving Packages",
    "W: a warning",
    "I: Extracting base-files...",
    "I: Extracting libc6...",
    "I: Base system installed successfully.",
]


def build_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> str:
    """What a build's progress shows on a pseudo-terminal."""
    master, slave = pty.openpty()
    with open(slave, "w") as terminal:
        monkeypatch.setattr(sys, "stderr", terminal)
        progress = Progress("debian:bookworm")
        for line in LINES:
            progress.step(line)
        progress.done()
        terminal.flush()
        shown = drain(master)
    os.close(master)
    return shown


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
    monkeypatch.setenv("TERM", "xterm")
    monkeypatch.delenv("NO_COLOR", raising=False)
    shown = build_on_a_terminal(monkeypatch)
    assert "\n" not in shown
    updates = shown.split("\r\x1b[K")
    assert updates[0] == ""
    assert updates[-1] == ""  # cleared at the end: the next message starts on a clean line
    assert len(updates) == 7  # five steps and the clearing
    assert updates[1].startswith("cove: building debian:bookworm [")
    assert updates[1].endswith("] Retrieving InRelease")


@pytest.mark.parametrize(("variable", "value"), [("NO_COLOR", "1"), ("TERM", "dumb")])
def test_no_escape_codes_with_no_color_or_a_dumb_terminal(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    shown = build_on_a_terminal(monkeypatch)
    assert "\x1b" not in shown
    assert "cove:   I: Extracting base-files..." in shown.replace("\r", "")


def test_apply_counts_its_actions_on_a_terminal(tmp_path: Path) -> None:
    """cove apply on a pseudo-terminal: "[i/n]" before each action; plain on a pipe."""
    import subprocess

    from tests.conftest import COVE

    config = tmp_path / "cove.toml"
    config.write_text(f'[host]\nbackend = "direct"\nstate-dir = "{tmp_path}/s"\n'
                      f'runtime-dir = "{tmp_path}/r"\nhosts-file = "{tmp_path}/hosts"\n'
                      "[containers.a]\n[containers.b]\n")  # fmt: skip
    env = {**os.environ, "COVE_CONFIG": str(config)}
    master, slave = pty.openpty()
    ran = subprocess.run([*COVE, "apply"], stdout=slave, stderr=subprocess.PIPE, env=env)
    shown = drain(master).replace("\r", "")
    os.close(slave)
    os.close(master)
    assert ran.returncode == 0, ran.stderr
    assert shown == "[1/2] a: created\n[2/2] b: created\n"
