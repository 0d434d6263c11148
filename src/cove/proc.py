"""The one gateway to other programs: a scrubbed environment, and every command logged as a
copy-pasteable line under --debug (DESIGN §3)."""

from __future__ import annotations

import logging
import os
import shlex
import subprocess
from collections.abc import Iterable, Mapping, Sequence

log = logging.getLogger("cove")

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


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


def run(
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    check: bool = True,
    capture: bool = True,
    timeout: float | None = None,
) -> subprocess.CompletedProcess[str]:
    full_env = dict(env) if env is not None else clean_env()
    log.debug("+ %s", command_line(argv, full_env))
    return subprocess.run(
        list(argv),
        env=full_env,
        stdin=subprocess.DEVNULL,
        capture_output=capture,
        text=True,
        check=check,
        timeout=timeout,
    )


def execve(argv: Sequence[str], env: Mapping[str, str]) -> None:
    """Replace this process (used where stdin, the terminal and the exit code must pass
    through untouched)."""
    log.debug("+ exec %s", command_line(argv, env))
    os.execve(argv[0], list(argv), dict(env))
