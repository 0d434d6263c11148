"""The one gateway to other programs: a scrubbed environment, and every command logged as a
copy-pasteable line under --debug (DESIGN §3)."""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import subprocess

# Set by `cove --debug`: every command is written to stderr as a line one can paste.
DEBUG = False

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def debug(line: str) -> None:
    if DEBUG:
        print(line, file=sys.stderr, flush=True)


def find_program(name: str, path: str = DEFAULT_PATH) -> str | None:
    """shutil.which without importing shutil on every command's start-up path."""
    for directory in path.split(":"):
        candidate = os.path.join(directory, name)
        if os.access(candidate, os.X_OK) and not os.path.isdir(candidate):
            return candidate
    return None


def clean_env(extra: Iterable[tuple[str, str]] = ()) -> dict[str, str]:
    """The caller's variables never reach nspawn or the guest: only these do."""
    env = {"PATH": DEFAULT_PATH, "LANG": "C.UTF-8"}
    env.update(extra)
    return env


def command_line(argv: Sequence[str], env: Mapping[str, str] | None = None) -> str:
    prefix = ""
    if env:
        prefix = "env -i " + " ".join(shlex.quote(f"{k}={v}") for k, v in env.items()) + " "
    return prefix + shlex.join(argv)


def logged_line(argv: Sequence[str]) -> str:
    """A command line for logs kept at default verbosity: the values of the guest's
    `environment` (nspawn's --setenv=NAME=VALUE) are left out, their names kept."""
    shown = [f"--setenv={a.split('=', 2)[1]}=…" if a.startswith("--setenv=") else a for a in argv]
    return shlex.join(shown)


def run(
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    check: bool = True,
    capture: bool = True,
    timeout: float | None = None,
    input: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a program found on cove's PATH (not the caller's), with `input` as its stdin."""
    import subprocess

    from cove.errors import CoveError

    program = argv[0] if "/" in argv[0] else find_program(argv[0])
    if program is None:
        raise CoveError(f"{argv[0]} is not installed", hint="scripts/install installs it")
    full_env = dict(env) if env is not None else clean_env()
    debug("+ " + command_line(argv, full_env) + (f" <<EOF\n{input}EOF" if input else ""))
    return subprocess.run(
        [program, *argv[1:]],
        env=full_env,
        input=input,
        stdin=None if input is not None else subprocess.DEVNULL,
        capture_output=capture,
        text=True,
        check=check,
        timeout=timeout,
    )


def execve(argv: Sequence[str], env: Mapping[str, str]) -> None:
    """Replace this process (used where stdin, the terminal and the exit code must pass
    through untouched)."""
    debug("+ exec " + command_line(argv, env))
    os.execve(argv[0], list(argv), dict(env))
