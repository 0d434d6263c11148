"""Every reporting verb's --json output against its documented schema (docs/schemas/)."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import jsonschema
import pytest

from tests.conftest import SLEEPER, Host

SCHEMAS = Path(__file__).resolve().parent.parent / "docs" / "schemas"


def strict(node: object) -> object:
    """The published schema as a closed one: readers must accept added fields, but cove's
    own output must not carry a field its schema does not document."""
    if isinstance(node, dict):
        closed = {k: strict(v) for k, v in node.items()}
        if closed.get("type") == "object" or "properties" in closed:
            closed.setdefault("additionalProperties", False)
        return closed
    if isinstance(node, list):
        return [strict(v) for v in node]
    return node


def valid(host: Host, schema: str, *argv: str) -> dict[str, object]:
    result = host.cove(*argv, "--json")
    assert result.stdout, f"{argv}: {result.stderr}"
    data: dict[str, object] = json.loads(result.stdout)
    jsonschema.validate(data, strict(json.loads((SCHEMAS / f"{schema}.json").read_text())))
    assert data["version"] == 1
    return data


def test_the_schemas_are_valid_schemas() -> None:
    for path in SCHEMAS.glob("*.json"):
        jsonschema.Draft202012Validator.check_schema(json.loads(path.read_text()))


@pytest.mark.e2e
def test_every_reporting_verb_matches_its_schema(cove_host: Host, busybox_image: Path) -> None:
    up, idle, gone = cove_host.name("up"), cove_host.name("idle"), cove_host.name("gone")
    tables = {
        up: f'image = "{busybox_image}"\n{SLEEPER}private-network = true\n'
        'host-address6 = "fd93::1"\nlocal-address6 = "fd93::2"\n',
        idle: f'image = "{busybox_image}"\n{SLEEPER}',
        gone: f'image = "{busybox_image}"\n{SLEEPER}',
    }
    cove_host.write("".join(f"[containers.{n}]\n{t}" for n, t in tables.items()))
    assert valid(cove_host, "plan", "plan")["actions"]
    applied = valid(cove_host, "apply", "apply")["actions"]
    assert applied and all(a["done"] and a["error"] is None for a in applied)  # type: ignore
    cove_host.cove("start", gone, check=True)
    cove_host.cove("stop", gone, check=True)
    cove_host.cove("start", idle, check=True)
    status = json.loads((cove_host.root / "run" / idle / "status.json").read_text())
    os.kill(status["supervisor"], signal.SIGKILL)  # the supervisor this test started
    cove_host.write("".join(f"[containers.{n}]\n{t}" for n, t in tables.items() if n != gone))

    rows = valid(cove_host, "list", "list")["containers"]
    assert {r["kind"] for r in rows} == {"declared", "orphaned"}  # type: ignore[index]
    assert valid(cove_host, "status", "status", idle)["state"] == "orphaned"
    assert valid(cove_host, "status", "status", gone)["state"] == "gone"
    assert valid(cove_host, "show-ip", "show-ip", up)["ipv6"] == "fd93::2"
    assert valid(cove_host, "doctor", "doctor")["leftovers"]
    valid(cove_host, "image-list", "image", "list")
    assert len(valid(cove_host, "options", "options")["options"]) > 30  # type: ignore[arg-type]
    cove_host.cove("stop", idle, check=True)  # an orphan: stop takes it down
