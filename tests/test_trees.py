"""remove_tree for real: bind mounts from the same file system, immutable files, symlinks out."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from cove.trees import mount_points_under, remove_tree


@pytest.fixture
def mounts() -> Iterator[list[Path]]:
    made: list[Path] = []
    yield made
    for point in reversed(made):
        subprocess.run(["umount", "-l", str(point)], check=False)


def bind(source: Path, target: Path, mounts: list[Path]) -> None:
    subprocess.run(["mount", "--bind", str(source), str(target)], check=True)
    mounts.append(target)


def test_a_bind_mount_from_the_same_file_system_stops_it_before_anything_goes(
    tmp_path: Path, mounts: list[Path]
) -> None:
    host_dir = tmp_path / "host data"
    host_dir.mkdir()
    (host_dir / "marker").write_text("keep me")
    tree = tmp_path / "state"
    (tree / "upper/srv/data").mkdir(parents=True)
    (tree / "upper/etc").mkdir()
    (tree / "upper/etc/hostname").write_text("c\n")
    bind(host_dir, tree / "upper/srv/data", mounts)
    # Same device number on both sides: only the mount table tells.
    assert (tree / "upper/srv/data").stat().st_dev == tree.stat().st_dev
    assert mount_points_under(tree) == [str(tree / "upper/srv/data")]
    with pytest.raises(OSError, match="a file system is mounted at .*srv/data"):
        remove_tree(tree)
    assert (host_dir / "marker").read_text() == "keep me"
    assert (tree / "upper/etc/hostname").exists()  # refused before removing anything


def test_a_mount_point_with_a_space_is_found(tmp_path: Path, mounts: list[Path]) -> None:
    source, tree = tmp_path / "src", tmp_path / "a tree"
    source.mkdir()
    (tree / "with space").mkdir(parents=True)
    bind(source, tree / "with space", mounts)
    assert mount_points_under(tree) == [str(tree / "with space")]


def test_immutable_and_append_only_entries_are_removed(tmp_path: Path) -> None:
    tree = tmp_path / "upper"
    (tree / "locked-dir").mkdir(parents=True)
    (tree / "locked-dir/inner").write_text("x")
    (tree / "immutable").write_text("x")
    (tree / "append-only").write_text("x")
    subprocess.run(["chattr", "+i", str(tree / "immutable")], check=True)
    subprocess.run(["chattr", "+a", str(tree / "append-only")], check=True)
    subprocess.run(["chattr", "+i", str(tree / "locked-dir")], check=True)
    try:
        with pytest.raises(PermissionError):
            (tree / "immutable").unlink()  # the flag really holds
        remove_tree(tree)
        assert not tree.exists()
    finally:
        if tree.exists():
            subprocess.run(["chattr", "-R", "-i", "-a", str(tree)], check=False)


def test_symlinks_are_removed_not_followed(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_text("x")
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "to-dir").symlink_to(outside)
    (tree / "to-file").symlink_to(outside / "keep")
    remove_tree(tree)
    assert not tree.exists()
    assert (outside / "keep").read_text() == "x"
    link = tmp_path / "link"
    link.symlink_to(outside)
    remove_tree(link)
    assert not link.exists() and (outside / "keep").exists()
