"""Security defaults: what cove writes is private to root, guests get no more than declared,
root-only verbs say so to others, and cove's own logs keep `environment` values out."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

from tests.conftest import COVE, Host, sleeper

pytestmark = pytest.mark.e2e

# Inside these the guest decides (its own /tmp is 1777, say): not cove's writing.
GUEST_TREES = ("upper", "work", "root", "scratch")


def cove_files(top: Path) -> list[Path]:
    found = []
    for directory, dirs, files in os.walk(top):
        dirs[:] = [d for d in dirs if d not in GUEST_TREES]
        found += [Path(directory, d) for d in dirs] + [Path(directory, f) for f in files]
    return found


def test_state_runtime_and_log_dirs_are_root_only(cove_host: Host, busybox_image: Path) -> None:
    name = cove_host.name("modes")
    cove_host.write(
        sleeper(name, busybox_image, 'auto-start = true\nfiles = { "/etc/motd" = "hello" }\n')
    )
    cove_host.cove("apply", check=True)  # state, records, runtime dir, log, staged files
    tops = [cove_host.root / d for d in ("state", "run", "log")]
    for top in tops:
        assert stat.S_IMODE(top.stat().st_mode) & 0o077 == 0, top
    for directory in (tops[0] / "containers", tops[0] / "applied", tops[1] / name,
                      tops[2] / name):  # fmt: skip
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700, directory
    writable = [p for top in tops for p in cove_files(top)
                if not p.is_symlink() and p.lstat().st_mode & stat.S_IWOTH]  # fmt: skip
    assert writable == []
    cove_host.cove("stop", name, check=True)


def test_environment_values_stay_out_of_coves_logs(cove_host: Host, busybox_image: Path) -> None:
    name = cove_host.name("secret")
    cove_host.write(sleeper(name, busybox_image, 'environment = { TOKEN = "hunter2-value" }\n'))
    for _ in range(2):  # the normal start, then the one from its launch card
        cove_host.cove("start", name, check=True)
        seen = cove_host.cove("run", name, "--", "sh", "-c", "echo $TOKEN").stdout
        assert seen == "hunter2-value\n"  # the guest has it
        log = cove_host.log(name)
        assert "--setenv=TOKEN=…" in log and "hunter2" not in log
        cove_host.cove("stop", name, check=True)


@pytest.mark.parametrize("verb", ["run", "root-login"])
def test_root_only_verbs_refuse_other_users(
    cove_host: Host, busybox_image: Path, verb: str
) -> None:
    name = cove_host.name("priv")
    cove_host.write(sleeper(name, busybox_image))
    os.chmod(cove_host.root, 0o755)
    os.chmod(cove_host.config, 0o644)
    argv = [*COVE, verb, name] + (["--", "id"] if verb == "run" else [])
    env = {**os.environ, "COVE_CONFIG": str(cove_host.config)}
    as_nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *argv]
    result = subprocess.run(as_nobody, capture_output=True, text=True, env=env)
    assert result.returncode == 125
    assert "run it as root" in result.stderr, result.stderr
