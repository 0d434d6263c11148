"""Render is pinned by golden files: tests/golden/<case>/cove.toml → NAME.service, NAME.argv
(one argument per line), NAME.root and, for a private network, NAME.net.
Set COVE_UPDATE_GOLDEN=1 to rewrite them on purpose."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import pytest

from cove.config import load_config
from cove.model import Backend
from cove.render import HostFacts, render
from cove.unitfile import exec_line, quote_word

GOLDEN = Path(__file__).parent / "golden"
CASES = sorted(p.name for p in GOLDEN.iterdir() if (p / "cove.toml").exists())
UPDATE = os.environ.get("COVE_UPDATE_GOLDEN") == "1"


def rendered(case: str) -> dict[str, str]:
    config = load_config(str(GOLDEN / case / "cove.toml"))
    config_name = "/etc/cove/cove.toml"
    facts = HostFacts(host=config.host, backend=Backend.DIRECT, cove="/usr/bin/cove")
    files = {}
    for name, container in config.containers.items():
        r = render(replace(container, source=config_name), facts)
        files[f"{name}.service"] = r.unit
        files[f"{name}.argv"] = "\n".join(r.argv) + "\n"
        files[f"{name}.root"] = "\n".join(r.layout.to_args()) + "\n"
        if r.net:
            files[f"{name}.net"] = "\n".join(r.net) + "\n"
    return files


@pytest.mark.parametrize("case", CASES)
def test_golden(case: str) -> None:
    for filename, text in rendered(case).items():
        path = GOLDEN / case / filename
        if UPDATE:
            path.write_text(text)
        assert path.exists(), f"missing golden file {path}; run with COVE_UPDATE_GOLDEN=1"
        assert text == path.read_text(), f"{path} differs from the render"


def test_render_is_deterministic() -> None:
    for case in CASES:
        assert rendered(case) == rendered(case)


def test_values_are_one_argument_each() -> None:
    argv = rendered("dir-command")["app.argv"].splitlines()
    assert "--setenv=GREETING=hello world" in argv
    assert '--setenv=ODD=50% of $HOME is "quoted" \\ here' in argv
    assert argv[-4:] == [
        "/bin/sh", "-c", 'echo "$GREETING" 100% > /tmp/out; exec sleep infinity', "-x",
    ]  # fmt: skip
    binds = rendered("dir-boot-binds")["files.argv"].splitlines()
    assert "--bind=/srv/my data:/srv/my data" in binds
    assert "--bind-ro=/srv/a\\:b%c:/mnt/a\\:b%c" in binds
    assert "--bind-ro=/etc/ssl:/etc/ssl" in binds


def test_systemd_backend_argv_registers_and_links_journal() -> None:
    unit = rendered("host-boot")["web.service"]
    assert '"--register=yes"' in unit
    assert '"--link-journal=try-guest"' in unit
    ephemeral = rendered("host-ephemeral")["scratch.service"]
    assert '"--link-journal=no"' in ephemeral
    assert "RequiresMountsFor" not in ephemeral


@pytest.mark.parametrize(
    ("value", "word"),
    [
        ("plain", '"plain"'),
        ("with space", '"with space"'),
        ("100%", '"100%%"'),
        ("$HOME", '"$$HOME"'),
        ('say "hi"', '"say \\"hi\\""'),
        ("back\\slash", '"back\\\\slash"'),
        ("%n$x", '"%%n$$x"'),
    ],
)
def test_unit_quoting(value: str, word: str) -> None:
    assert quote_word(value) == word


def test_unit_quoting_rejects_newlines() -> None:
    with pytest.raises(ValueError):
        exec_line(["a\nExecStartPre=/bin/evil"])


def test_options_reference_page_is_current() -> None:
    from cove.docs import options_markdown

    page = Path(__file__).parent.parent / "docs/options.md"
    if UPDATE:
        page.write_text(options_markdown())
    assert page.read_text() == options_markdown(), "regenerate: cove options --markdown"
    for nixos in ("privateNetwork", "extraVeths", "forwardPorts", "privateUsers", "bindMounts"):
        assert f"| `{nixos}` |" in page.read_text()


def test_every_container_key_has_a_golden_case() -> None:
    import tomllib

    from cove.netsettings import VETH_SETTINGS
    from cove.settings import CONTAINER_SETTINGS

    used: set[str] = set()
    for case in CASES:
        document = tomllib.loads((GOLDEN / case / "cove.toml").read_text())
        for table in document.get("containers", {}).values():
            used |= set(table)
            for veth in table.get("extra-veths", {}).values():
                used |= {f"extra-veths.{key}" for key in veth}
    assert {s.key for s in CONTAINER_SETTINGS} - used == set()
    assert {f"extra-veths.{s.key}" for s in VETH_SETTINGS} - used == set()


def test_options_json_lists_every_key() -> None:
    import json
    import subprocess
    import sys

    from cove.settings import CONTAINER_SETTINGS

    out = subprocess.run([sys.executable, "-m", "cove", "options", "--json"], check=True,
                         capture_output=True, text=True).stdout  # fmt: skip
    data = json.loads(out)
    assert data["version"] == 1
    assert [o["key"] for o in data["options"]] == [s.key for s in CONTAINER_SETTINGS]
    by_key = {o["key"]: o for o in data["options"]}
    assert by_key["private-network"]["nixos"] == "privateNetwork"
    assert by_key["private-network"]["default"] == "false"
    assert by_key["timeout-start-sec"]["default"] == '"60s"'
    assert by_key["host-address"]["default"] == "unset"


def test_a_start_failing_for_want_of_inotify_instances_says_which_limit() -> None:
    from cove.direct import limit_hint

    tail = "  Failed to create inotify object: Too many open files\n  Failed to allocate manager"
    hint = limit_hint(tail)
    assert hint is not None and "fs.inotify.max_user_instances" in hint
    assert limit_hint("  Failed to mount /sys: Operation not permitted") is None
