"""NAME.containers in a block of the hosts file that cove owns, one per config file."""

from __future__ import annotations

from pathlib import Path

from cove import hostsfile
from cove.config import parse_config

HOSTS = "127.0.0.1\tlocalhost\n::1\tlocalhost\n"


def _config(text: str, path: str = "/etc/cove/cove.toml"):  # type: ignore[no-untyped-def]
    return parse_config(text.encode(), path)


def test_block_is_added_replaced_and_removed_leaving_the_rest(tmp_path: Path) -> None:
    hosts = tmp_path / "hosts"
    hosts.write_text(HOSTS)
    hosts.chmod(0o644)
    web = _config(
        '[containers.web]\nprivate-network = true\nlocal-address = "10.1.0.2/24"\n'
        'local-address6 = "fc00::2"\n[containers.plain]\n'
    )
    hostsfile.sync(str(hosts), web)
    assert hosts.read_text() == HOSTS + (
        "# BEGIN cove /etc/cove/cove.toml (managed by cove)\n"
        "10.1.0.2\tweb.containers\nfc00::2\tweb.containers\n"
        "# END cove /etc/cove/cove.toml\n"
    )
    assert hosts.stat().st_mode & 0o777 == 0o644
    other = _config('[containers.db]\nprivate-network = true\nlocal-address = "10.2.0.2"\n',
                    "/srv/other.toml")  # fmt: skip
    hostsfile.sync(str(hosts), other)
    moved = _config('[containers.web]\nprivate-network = true\nlocal-address = "10.1.0.9"\n')
    hostsfile.sync(str(hosts), moved)
    text = hosts.read_text()
    assert "10.1.0.9\tweb.containers" in text and "10.1.0.2" not in text
    assert "10.2.0.2\tdb.containers" in text, "another file's block is left alone"
    hostsfile.sync(str(hosts), _config(""))
    hostsfile.sync(str(hosts), _config("", "/srv/other.toml"))
    assert hosts.read_text() == HOSTS


def test_nothing_is_written_for_a_file_without_addresses(tmp_path: Path) -> None:
    hosts = tmp_path / "hosts"
    hostsfile.sync(str(hosts), _config("[containers.web]\n"))
    assert not hosts.exists()
