"""The generated root of `image = "host"`: built once, shared, replaced atomically."""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from cove import rootfs


def test_host_base_is_built_once_and_reused(tmp_path: Path) -> None:
    link = tmp_path / "images/host"
    first = rootfs.ensure_host_base(link)
    assert link.resolve() == first
    assert (first / "etc/machine-id").read_text() == ""
    assert os.readlink(first / "etc/os-release") == "../usr/lib/os-release"
    assert (first / "etc/shadow").read_text().startswith("root:*:")
    assert not (first / "etc/hostname").exists(), "the hostname belongs to each container"
    marker = first / "etc/.built-once"
    marker.write_text("")
    assert rootfs.ensure_host_base(link) == first
    assert marker.exists()
    assert sorted(p.name for p in link.parent.iterdir()) == ["host", first.name]


def test_concurrent_starts_build_one_host_base(tmp_path: Path) -> None:
    link = tmp_path / "images/host"
    with ProcessPoolExecutor(4) as pool:
        built = set(pool.map(rootfs.ensure_host_base, [link] * 4))
    assert len(built) == 1
    assert sorted(p.name for p in link.parent.iterdir()) == ["host", built.pop().name]


def test_a_stale_link_moves_to_the_current_tree(tmp_path: Path) -> None:
    link = tmp_path / "images/host"
    link.parent.mkdir()
    (link.parent / "host-0000000000000000").mkdir()
    link.symlink_to("host-0000000000000000")
    current = rootfs.ensure_host_base(link)
    assert current.name == f"host-{rootfs.host_base_key()}"
    assert os.readlink(link) == current.name


def test_container_layer_names_the_container(tmp_path: Path) -> None:
    layer = tmp_path / "base"
    rootfs.write_container_layer(layer, "web")
    assert (layer / "etc/hostname").read_text() == "web\n"
    assert "127.0.1.1\tweb" in (layer / "etc/hosts").read_text()
    rootfs.write_container_layer(layer, "db")
    assert (layer / "etc/hostname").read_text() == "db\n"


def test_image_listing_names_the_host_tree_and_its_users(tmp_path: Path) -> None:
    from cove import images
    from cove.model import HostConfig

    host = HostConfig(state_dir=str(tmp_path))
    current = rootfs.ensure_host_base(Path(host.host_base))
    old = current.with_name("host-0000000000000000")
    old.mkdir()
    listed = images.listing(host, {os.path.realpath(host.host_base): ["web"]})
    by_name = {i.identity: i for i in listed}
    assert by_name[current.name].label == "host /etc (current)"
    assert by_name[current.name].used_by == ("web",)
    assert by_name[current.name].size > 0
    assert (by_name[old.name].label, by_name[old.name].used_by) == ("host /etc", ())
