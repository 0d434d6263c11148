"""Imperative containers: cove create / update / destroy, and how list, status and apply see
them (direct backend)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.conftest import COVE, SLEEPER, Host, sleeper

pytestmark = pytest.mark.e2e


def imperative_file(host: Host, name: str) -> Path:
    return host.root / "etc" / "containers" / f"{name}.toml"


def make_command_container(host: Host, name: str) -> None:
    """`cove create` makes booted containers; the busybox image needs a command instead."""
    path = imperative_file(host, name)
    path.write_text(path.read_text() + SLEEPER)


def test_create_list_status_update_and_destroy(net_host: Host, busybox_image: Path) -> None:
    declared = net_host.name("decl")
    net_host.write(sleeper(declared, busybox_image))
    name = net_host.name("imp")
    created = net_host.cove("create", name, "--image", str(busybox_image), "--port", "8080:80",
                            "--port", "udp:5353", check=True)  # fmt: skip
    assert created.stdout == f"{name}\n"  # alone on stdout; what was done on stderr
    assert f"{name}: created" in created.stderr
    text = imperative_file(net_host, name).read_text()
    assert f"[containers.{name}]" in text
    assert 'host-address = "10.233.0.1"' in text and 'local-address = "10.233.0.2"' in text
    assert '{ protocol = "tcp", host-port = 8080, container-port = 80 }' in text
    assert '{ protocol = "udp", host-port = 5353 }' in text
    make_command_container(net_host, name)

    rows = json.loads(net_host.cove("list", "--json", check=True).stdout)["containers"]
    kinds = {r["name"]: r["kind"] for r in rows}
    assert kinds == {declared: "declared", name: "imperative"}
    # Applying the host file never removes an imperative container.
    assert all(a["name"] != name or a["action"] != "remove"
               for a in json.loads(net_host.cove("plan", "--json").stdout)["actions"])  # fmt: skip

    net_host.cove("update", name, check=True)  # its file changed (a command): applied
    net_host.cove("start", name, check=True)
    status = json.loads(net_host.cove("status", name, "--json", check=True).stdout)
    assert status["kind"] == "imperative" and status["state"] == "up"
    assert status["addresses"] == {"host-address": "10.233.0.1", "local-address": "10.233.0.2"}
    assert isinstance(status["leader"], int) and status["uptime"] >= 0
    assert status["root"] == "persistent"

    refused = net_host.cove("destroy", declared)
    assert refused.returncode == 1
    assert f"it is declared in {net_host.config}" in refused.stderr
    assert net_host.cove("destroy", name, check=True).stdout == f"{name}: destroyed\n"
    assert not imperative_file(net_host, name).exists()
    assert not (net_host.root / "state" / "containers" / name).exists()
    assert net_host.cove("status", name).stdout == "gone\n"
    pool = json.loads((net_host.root / "state" / "addresses.json").read_text())
    assert name not in pool


def test_create_refuses_a_taken_name_unless_asked_for_a_unique_one(
    cove_host: Host, busybox_image: Path
) -> None:
    taken = cove_host.name("web")
    cove_host.write(sleeper(taken, busybox_image))
    refused = cove_host.cove("create", taken)
    assert refused.returncode == 1
    assert f"cannot create {taken}: it exists (declared in {cove_host.config})" in refused.stderr
    unique = cove_host.cove("create", taken, "--ensure-unique-name", check=True)
    assert unique.stdout == f"{taken}-0\n"


def test_concurrent_creates_get_distinct_names_and_addresses(cove_host: Host) -> None:
    cove_host.write("")
    env = {**os.environ, "COVE_CONFIG": str(cove_host.config)}
    base = cove_host.name("many")
    runs = [subprocess.Popen([*COVE, "create", base, "--ensure-unique-name"], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(6)]  # fmt: skip
    outputs = [run.communicate(timeout=120) for run in runs]
    assert [run.returncode for run in runs] == [0] * 6, outputs
    names = [out.splitlines()[-1] for out, _ in outputs]
    assert sorted(names) == sorted([base, *(f"{base}-{i}" for i in range(5))])
    addresses = {imperative_file(cove_host, n).read_text().split("local-address = ")[1]
                 for n in names}  # fmt: skip
    assert len(addresses) == 6


def test_a_create_that_would_break_the_file_leaves_nothing(
    cove_host: Host, busybox_image: Path
) -> None:
    other = cove_host.name("other")
    cove_host.write(f"""
        [containers.{other}]
        image = "{busybox_image}"
        {SLEEPER}
        private-network = true
        host-address = "10.86.0.1"
        local-address = "10.86.0.2"
        """)
    name = cove_host.name("clash")
    clash = cove_host.cove("create", name, "--host-address", "10.86.0.3", "--local-address",
                           "10.86.0.2")  # fmt: skip
    assert clash.returncode == 2
    assert "address 10.86.0.2 is also used by" in clash.stderr
    assert not imperative_file(cove_host, name).exists()
    for port in ("http", "sctp:80", "99999", "0:80"):
        bad = cove_host.cove("create", name, "--port", port)
        assert bad.returncode == 2 and f"--port '{port}'" in bad.stderr, bad.stderr
    assert not imperative_file(cove_host, name).exists()
    pool = cove_host.root / "state" / "addresses.json"
    assert not pool.exists() or name not in json.loads(pool.read_text())  # no pair kept
    assert cove_host.cove("create", "Bad_Name").returncode == 2
    missing = cove_host.cove("create", name, "--image", "/nonexistent/root")
    assert missing.returncode == 2, missing.stderr
    assert "--image /nonexistent/root: no such file or directory" in missing.stderr
    assert not imperative_file(cove_host, name).exists()


def test_list_shows_orphans_left_by_a_dropped_persistent_container(
    cove_host: Host, busybox_image: Path
) -> None:
    name = cove_host.name("left")
    cove_host.write(sleeper(name, busybox_image))
    cove_host.cove("apply", check=True)
    cove_host.cove("start", name, check=True)
    cove_host.cove("stop", name, check=True)
    cove_host.write("")
    rows = json.loads(cove_host.cove("list", "--json", check=True).stdout)["containers"]
    assert rows == [{"name": name, "declared": False, "kind": "orphaned", "state": "down"}]
    assert f"{name}  down   orphaned" in cove_host.cove("list", check=True).stdout
    cove_host.cove("apply", "--prune", check=True)
    assert json.loads(cove_host.cove("list", "--json").stdout)["containers"] == []
