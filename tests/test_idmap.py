"""Which UID range a container's layers are shifted to (cove.idmap), on plain directories."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cove import idmap
from cove.errors import CoveError

BASE = 0x00510000


def upper(tmp_path: Path, owner: int, content: bool) -> str:
    path = tmp_path / "upper"
    path.mkdir()
    if content:
        (path / "etc").mkdir()
    os.chown(path, owner, owner)
    return str(path)


def test_pick_is_stable_per_name_aligned_and_in_nspawns_bounds() -> None:
    first = idmap.pick("web")
    assert first == idmap.pick("web")
    assert first % idmap.RANGE == 0 and idmap.FIRST_BASE <= first <= idmap.LAST_BASE
    assert len({idmap.pick(f"c{i}") for i in range(50)}) > 45


@pytest.mark.parametrize(
    ("mode", "owner", "content", "expected"),
    [
        ("pick", 0, False, "picked"),  # a new container: its name's range
        ("pick", BASE, True, BASE),  # written before: the range its files have
        (str(BASE), 0, False, BASE),
        (str(BASE), BASE, True, BASE),
        ("no", 0, True, 0),
        ("no", BASE, False, 0),  # nothing written yet: any range will do
    ],
)
def test_the_range_matches_what_the_upper_layer_holds(
    tmp_path: Path, mode: str, owner: int, content: bool, expected: int | str
) -> None:
    got = idmap.resolve_base(mode, "web", upper(tmp_path, owner, content))
    assert got == (idmap.pick("web") if expected == "picked" else expected)


@pytest.mark.parametrize(
    ("mode", "owner", "says"),
    [
        ("no", BASE, f"written with UIDs from {BASE}"),
        (str(BASE + idmap.RANGE), BASE, f"written with UIDs from {BASE}"),
        ("pick", 0, "written with the host's own UIDs"),
        ("pick", BASE + 5, f"written with UIDs from {BASE + 5}"),  # not a range nspawn picks
        ("pick", 0x70000000, 'UIDs from 1879048192, and private-users is now "pick"'),
        ("identity", BASE, 'private-users is now "identity"'),
        (str(BASE), 0, "written with the host's own UIDs"),
    ],
)
def test_another_range_for_written_files_is_refused(
    tmp_path: Path, mode: str, owner: int, says: str
) -> None:
    with pytest.raises(CoveError) as refused:
        idmap.resolve_base(mode, "web", upper(tmp_path, owner, True))
    assert says in refused.value.message and "`cove destroy web`" in refused.value.message


def test_a_busy_range_is_seen_through_nspawns_kind_of_lock(tmp_path: Path) -> None:
    """nspawn holds an open-file-description lock, which flock() does not see."""
    import fcntl
    import struct

    base = 0x7A0000
    path = Path(idmap.LOCK_DIR, str(base))
    path.parent.mkdir(parents=True, exist_ok=True)
    assert not idmap._range_busy(base)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        assert not idmap._range_busy(base)  # the file alone is no lock
        fcntl.fcntl(fd, fcntl.F_OFD_SETLK, struct.pack("hh4xqqi4x", fcntl.F_WRLCK, 0, 0, 0, 0))
        assert idmap._range_busy(base)
    finally:
        path.unlink()
        os.close(fd)
