"""cove.api, through the documented example script, on real containers."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from cove import api
from tests.conftest import Host, sleeper

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "api.py"


@pytest.mark.e2e
def test_the_example_plans_applies_reports_and_stops(cove_host: Host, busybox_image: Path):
    auto, idle = cove_host.name("auto"), cove_host.name("idle")
    cove_host.write(sleeper(auto, busybox_image, "auto-start = true\n")
                    + sleeper(idle, busybox_image))  # fmt: skip
    ran = subprocess.run([sys.executable, str(EXAMPLE), str(cove_host.config)],
                         capture_output=True, text=True)  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    lines = ran.stdout.splitlines()
    assert f"plan: {auto} start: auto-start" in lines
    assert f"plan: {idle} create: declared, not applied yet" in lines
    assert any(line.startswith(f"status: {auto} up leader=") for line in lines)
    assert f"status: {idle} down leader=None" in lines
    assert f"stopped: {auto}" in lines and f"stopped: {idle}" not in lines
    host = api.load(str(cove_host.config))
    # Applied: all that is left is starting the auto-start one the example stopped.
    assert [(a.name, a.verb) for a in api.plan(host).actions] == [(auto, "start")]
    assert api.status(host, auto).state == "down"


def test_errors_are_cove_errors(tmp_path: Path) -> None:
    from cove.errors import ConfigError

    bad = tmp_path / "cove.toml"
    bad.write_text("[containers.a_b]\n")
    with pytest.raises(ConfigError) as info:
        api.load(str(bad))
    assert info.value.exit_code == 2 and "containers.a_b" in info.value.message
