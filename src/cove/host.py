"""Host facts, read once per command so that render stays pure."""

from __future__ import annotations

import os
import sys

from cove.model import Backend, HostConfig
from cove.proc import find_program
from cove.render import HostFacts


def systemd_is_pid1() -> bool:
    """sd_booted(): systemd creates this directory early at boot."""
    return os.path.isdir("/run/systemd/system")


def resolve_backend(wanted: Backend) -> Backend:
    if wanted is Backend.AUTO:
        return Backend.SYSTEMD if systemd_is_pid1() else Backend.DIRECT
    return wanted


def cove_executable() -> str:
    """Absolute path of the `cove` that units call back (the one running now if possible)."""
    here = os.path.abspath(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    if os.path.basename(here) == "cove" and os.access(here, os.X_OK):
        return here
    beside = os.path.join(os.path.dirname(sys.executable), "cove")  # a venv's, for cove.api
    if os.access(beside, os.X_OK):
        return beside
    return find_program("cove") or "/usr/bin/cove"


def probe(host: HostConfig) -> HostFacts:
    nspawn = find_program("systemd-nspawn") or "/usr/bin/systemd-nspawn"
    return HostFacts(
        host=host, backend=resolve_backend(host.backend), nspawn=nspawn, cove=cove_executable()
    )
