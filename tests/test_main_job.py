"""The README's first command keeps its promise (examples/main-job.sh, after the install)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from cove import quickstart

pytestmark = pytest.mark.e2e

SCRIPT = Path(__file__).parent.parent / "examples/main-job.sh"


def test_main_job_boots_forgets_and_leaves_nothing() -> None:
    cove = Path(sys.executable).with_name("cove")
    env = {**os.environ, "COVE": str(cove)}
    env.pop("COVE_CONFIG", None)
    try:
        result = subprocess.run(
            [str(SCRIPT)], capture_output=True, text=True, env=env, timeout=300, check=False
        )
    finally:
        # Its launch cards outlive this checkout otherwise, and name a file that is gone.
        quickstart.forget_all(str(SCRIPT.with_name("main-job.toml")))
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert "hello: started" in out
    assert "\nrunning\n" in out  # systemctl is-system-running inside the container
    assert "cat: /root/note: No such file or directory" in out
    assert "hello: stopped\nscratch: stopped\n" in out
    assert out.rstrip().endswith("main job: OK")
