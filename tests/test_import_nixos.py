"""cove import-nixos on JSON written by hand in the shape `nix eval --json` prints."""

from __future__ import annotations

import json
import os
import subprocess
import tomllib
from pathlib import Path

from cove import nixos
from tests.conftest import COVE

FIXTURE = Path(__file__).parent / "nixos" / "containers.json"


def imported(tmp_path: Path) -> tuple[Path, dict[str, dict[str, object]], str]:
    out = tmp_path / "cove.toml"
    result = subprocess.run([*COVE, "import-nixos", str(FIXTURE), "-o", str(out)],
                            capture_output=True, text=True)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "3 containers converted" in result.stderr
    text = out.read_text()
    return out, tomllib.loads(text)["containers"], text


def test_every_nixos_option_of_the_settings_table_is_in_the_fixture() -> None:
    used = {option for options in json.loads(FIXTURE.read_text()).values() for option in options}
    assert set(nixos.BY_NIXOS) <= used, set(nixos.BY_NIXOS) - used


def test_options_are_carried_under_their_cove_keys(tmp_path: Path) -> None:
    _, containers, _ = imported(tmp_path)
    web, db, vpn = containers["web"], containers["db"], containers["vpn"]
    assert web["bind-mounts"] == {
        "/var/www": {"host-path": "/srv/www"},  # keyed by mountPoint; read-only by default
        "/data": {"host-path": "/srv/data", "is-read-only": False},  # attribute name "data"
        "/etc/ssl": {"host-path": "/etc/ssl"},  # hostPath null: the same path
    }
    assert web["forward-ports"] == [
        {"container-port": 80, "host-port": 8080, "protocol": "tcp"},
        {"host-port": 5353, "protocol": "udp"},  # containerPort null: the same port
    ]
    assert web["extra-veths"] == {"vb-web2": {
        "forward-ports": [{"container-port": 443, "host-port": 8443, "protocol": "tcp"}],
        "host-address": "10.250.1.1", "local-address": "10.250.1.2"}}  # fmt: skip
    assert web["allowed-devices"] == [{"modifier": "rwm", "node": "/dev/net/tun"}]
    assert (web["private-users"], db["private-users"]) == ("pick", 65536)
    assert web["timeout-start-sec"] == "2min" and web["local-mac-address"] == "02:00:00:00:0a:02"
    assert "restart-if-changed" not in web and db["restart-if-changed"] is False  # defaults out
    assert (db["macvlans"], db["interfaces"]) == (["eno2"], ["eno3"])
    assert vpn == {"copy-resolv-conf": False, "network-namespace": "/run/netns/vpn"}


def test_what_cannot_be_carried_is_a_note(tmp_path: Path) -> None:
    _, _, text = imported(tmp_path)
    assert "# NOTE web: the guest's NixOS configuration cannot be carried" in text
    assert "# NOTE web: `path` (a NixOS system closure) has no cove equivalent" in text
    assert "# NOTE db: `flake` has no cove equivalent" in text
    assert "# NOTE db: `futureOption` = 'something' has no cove key" in text
    assert "# NOTE vpn: no guest system given" in text
    assert "# NOTE web: private-users is carried, but cove does not run it yet" in text
    assert "# NOTE web: extra-veths forward-ports are carried" in text


def test_the_converted_file_renders_every_container(tmp_path: Path) -> None:
    out, containers, _ = imported(tmp_path)
    env = {**os.environ, "COVE_CONFIG": str(out)}
    for name in containers:
        rendered = subprocess.run([*COVE, "render", name], capture_output=True, text=True,
                                  env=env)  # fmt: skip
        assert rendered.returncode == 0, rendered.stderr
        assert f"--machine={name}" in rendered.stdout


def test_a_file_that_is_not_containers_json_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2]")
    result = subprocess.run([*COVE, "import-nixos", str(bad)], capture_output=True, text=True)
    assert result.returncode == 2
    assert f"cove: {bad}: expected a JSON object of containers" in result.stderr
    assert "nix eval --json" in result.stderr


def test_network_options_without_private_network_are_left_out_with_a_note() -> None:
    table, notes = nixos.convert_container(
        "plain", {"privateNetwork": False, "hostAddress": "10.1.0.1", "localAddress": "10.1.0.2"}
    )
    assert "host-address" not in table and "local-address" not in table
    assert any("NixOS ignores them without privateNetwork" in n for n in notes)


def test_a_name_cove_cannot_take_blames_the_input_and_writes_nothing(tmp_path: Path) -> None:
    source, out = tmp_path / "nix.json", tmp_path / "cove.toml"
    source.write_text(json.dumps({"bad_name": {"autoStart": True}}))
    result = subprocess.run([*COVE, "import-nixos", str(source), "-o", str(out)],
                            capture_output=True, text=True)  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.startswith(f"cove: {source}: cannot be carried over as it is:\n")
    assert "containers.bad_name" in result.stderr
    assert f"hint: fix or rename those containers in {source}" in result.stderr
    assert not out.exists()
