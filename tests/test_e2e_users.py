"""private-users on real containers: the guest's IDs shifted to a range of their own by
ID-mapped layers, writable bind mounts ID-mapped back to the host's IDs, and a persistent
container held to the range its files were written with."""

from __future__ import annotations

import fcntl
import json
import os
import struct
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from cove import idmap
from tests.conftest import COVE, Host, _cleanup, sleeper

pytestmark = pytest.mark.e2e


def uid_map(host: Host, name: str) -> list[int]:
    out = host.cove("run", name, "--", "cat", "/proc/self/uid_map", check=True).stdout
    return [int(field) for field in out.split()]


def owner_of(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_uid, st.st_gid


def bind(mount_point: str, source: Path) -> str:
    """A writable bind mount, as a line of the container's table."""
    return f'bind-mounts."{mount_point}" = {{ host-path = "{source}", is-read-only = false }}\n'


def ran_with_pick(host: Host, name: str, image: Path) -> int:
    """Declare `name` persistent with "pick", start it, write a file, stop it: its range."""
    host.write(sleeper(name, image, 'private-users = "pick"\n'))
    host.cove("start", name, check=True)
    base = uid_map(host, name)[1]
    host.cove("run", name, "--", "touch", "/written", check=True)
    host.cove("stop", name, check=True)
    return base


@pytest.fixture
def ramfs(cove_host: Host) -> Iterator[Path]:
    """A directory on a file system that cannot be ID-mapped (ramfs)."""
    path = cove_host.root / "ramfs"
    path.mkdir()
    subprocess.run(["mount", "-t", "ramfs", "cove-test", str(path)], check=True)
    yield path
    subprocess.run(["umount", str(path)], check=False)


def test_pick_shifts_the_guest_and_a_writable_bind_keeps_host_ids(
    cove_host: Host, busybox_image: Path
) -> None:
    name = cove_host.name("shift")
    data = cove_host.root / "data"
    data.mkdir()
    (data / "from-host").write_text("hello\n")
    cove_host.write(sleeper(name, busybox_image, 'private-users = "pick"\n' + bind("/data", data)))
    for d in ("state/containers", "run"):  # there on any host that has run a container
        (cove_host.root / d).mkdir(parents=True, exist_ok=True)
    before = cove_host.snapshot()

    cove_host.cove("start", name, check=True)
    inside, base, count = uid_map(cove_host, name)
    assert (inside, count) == (0, 65536)
    status = json.loads(cove_host.cove("status", name, "--json", check=True).stdout)
    assert status["uid-range"] == {"first": base, "count": 65536}
    assert idmap.FIRST_BASE <= base <= idmap.LAST_BASE and base % 65536 == 0
    # The guest sees its own root and image as root's; the host sees the range.
    listing = cove_host.cove("run", name, "--", "stat", "-c", "%u:%g", "/", "/bin", check=True)
    assert listing.stdout == "0:0\n0:0\n"
    upper = cove_host.root / "state/containers" / name / "upper"
    assert owner_of(upper) == (base, base)
    assert Path(idmap.LOCK_DIR, str(base)).exists()  # nspawn holds the range for its life
    # Root in the guest writes to the bind as the host's root, and reads the host's files.
    run = cove_host.cove("run", name, "--", "sh", "-c",
                         "cat /data/from-host && echo new > /data/from-guest && mkdir /data/dir",
                         check=True)  # fmt: skip
    assert run.stdout == "hello\n"
    assert owner_of(data / "from-guest") == (0, 0)
    assert owner_of(data / "dir") == (0, 0)
    # A file the guest writes in its own root lands in the upper layer shifted.
    cove_host.cove("run", name, "--", "sh", "-c", "echo x > /root-file", check=True)
    assert owner_of(upper / "root-file") == (base, base)

    cove_host.cove("stop", name, check=True)
    assert not Path(idmap.LOCK_DIR, str(base)).exists()
    status = json.loads(cove_host.cove("status", name, "--json", check=True).stdout)
    assert status["uid-range"] is None
    # Started again: the same range, read back from the files it wrote.
    cove_host.cove("start", name, check=True)
    assert uid_map(cove_host, name)[1] == base
    cat = cove_host.cove("run", name, "--", "stat", "-c", "%u", "/root-file", check=True)
    assert cat.stdout == "0\n"
    cove_host.cove("stop", name, check=True)
    cove_host.write("")  # dropped from the file, then destroyed: nothing of it is left
    cove_host.cove("destroy", name, check=True)
    assert before.difference(cove_host.snapshot()) == {}


@pytest.mark.parametrize("first", [0x7FF00000, 0x7FF00000 + 1000])  # not only 65536-aligned
def test_a_first_uid_is_used_as_given(cove_host: Host, busybox_image: Path, first: int) -> None:
    name = cove_host.name("fixed")
    files = 'files = { "/etc/made/here" = "x" }\n'
    cove_host.write(sleeper(name, busybox_image, f"private-users = {first}\n{files}"))
    for _ in range(2):  # the second start checks the range its files were written with
        cove_host.cove("start", name, check=True)
        assert uid_map(cove_host, name) == [0, first, 65536]
        owners = cove_host.cove("run", name, "--", "stat", "-c", "%u", "/", "/etc/made/here",
                                check=True)  # fmt: skip
        assert owners.stdout == "0\n0\n"
        cove_host.cove("stop", name, check=True)


def test_two_picked_containers_get_distinct_ranges(cove_host: Host, busybox_image: Path) -> None:
    names = [cove_host.name("one"), cove_host.name("two")]
    cove_host.write("".join(sleeper(n, busybox_image, 'ephemeral = true\nprivate-users = "pick"\n')
                            for n in names))  # fmt: skip
    cove_host.cove("start", *names, check=True)
    bases = {uid_map(cove_host, n)[1] for n in names}
    assert len(bases) == 2 and 0 not in bases
    cove_host.cove("stop", *names, check=True)


def test_identity_maps_the_host_ids(cove_host: Host, busybox_image: Path) -> None:
    name = cove_host.name("ident")
    plain = cove_host.name("plainids")
    cove_host.write(sleeper(name, busybox_image, 'private-users = "identity"\n')
                    + sleeper(plain, busybox_image))  # fmt: skip
    cove_host.cove("start", name, plain, check=True)
    assert uid_map(cove_host, name) == [0, 0, 65536]
    ranges = {n: json.loads(cove_host.cove("status", n, "--json", check=True).stdout)["uid-range"]
              for n in (name, plain)}  # fmt: skip
    assert ranges == {name: {"first": 0, "count": 65536}, plain: None}
    cove_host.cove("stop", name, plain, check=True)


def test_a_persistent_container_keeps_the_range_its_files_have(
    cove_host: Host, busybox_image: Path
) -> None:
    name = cove_host.name("held")
    base = ran_with_pick(cove_host, name, busybox_image)
    for mode in ('"no"', "65536", '"identity"'):
        cove_host.write(sleeper(name, busybox_image, f"private-users = {mode}\n"))
        refused = cove_host.cove("start", name)
        assert refused.returncode == 1
        said = refused.stderr
        assert f"written with UIDs from {base}, and private-users is now {mode}" in said, said
        assert f'set private-users = {base} or "pick" again' in said
        assert f"`cove destroy {name}`" in said
        assert cove_host.cove("status", name).stdout == "down\n"
        assert not (cove_host.root / "run" / name).exists()
    # Its own first UID, given instead of "pick", is the same range: accepted.
    cove_host.write(sleeper(name, busybox_image, f"private-users = {base}\n"))
    cove_host.cove("start", name, check=True)
    assert uid_map(cove_host, name)[1] == base
    cove_host.cove("stop", name, check=True)
    # The other way: a container that ran with the host's IDs does not silently shift.
    other = cove_host.name("plain")
    cove_host.write(sleeper(other, busybox_image))
    cove_host.cove("start", other, check=True)
    cove_host.cove("run", other, "--", "touch", "/written", check=True)
    cove_host.cove("stop", other, check=True)
    cove_host.write(sleeper(other, busybox_image, 'private-users = "pick"\n'))
    refused = cove_host.cove("start", other)
    assert refused.returncode == 1 and "written with the host's own UIDs" in refused.stderr


def test_a_first_uid_pick_would_not_choose_is_not_taken_for_pick(
    cove_host: Host, busybox_image: Path
) -> None:
    name = cove_host.name("outside")
    first = 0x70000000  # above nspawn's picking window: it would take another range
    cove_host.write(sleeper(name, busybox_image, f"private-users = {first}\n"))
    cove_host.cove("start", name, check=True)
    cove_host.cove("run", name, "--", "touch", "/written", check=True)
    cove_host.cove("stop", name, check=True)
    cove_host.write(sleeper(name, busybox_image, 'private-users = "pick"\n'))
    refused = cove_host.cove("start", name)
    assert refused.returncode == 1
    assert f"set private-users = {first} again" in refused.stderr, refused.stderr


@pytest.fixture
def held_range() -> Iterator[Callable[[int], None]]:
    """Hold ranges' locks as a running nspawn does (an open file description lock)."""
    held: list[tuple[int, Path]] = []

    def hold(base: int) -> None:
        path = Path(idmap.LOCK_DIR, str(base))
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.fcntl(fd, fcntl.F_OFD_SETLK, struct.pack("hh4xqqi4x", fcntl.F_WRLCK, 0, 0, 0, 0))
        held.append((fd, path))

    yield hold
    for fd, path in held:
        path.unlink()
        os.close(fd)


def test_pick_passes_over_a_range_another_nspawn_holds(
    cove_host: Host, busybox_image: Path, held_range: Callable[[int], None]
) -> None:
    name = cove_host.name("busy")
    first_choice = idmap.pick(name)
    held_range(first_choice)
    cove_host.write(sleeper(name, busybox_image, 'ephemeral = true\nprivate-users = "pick"\n'))
    cove_host.cove("start", name, check=True)
    base = uid_map(cove_host, name)[1]
    assert base not in (0, first_choice)
    # The layers were mapped to the range nspawn runs the guest in.
    owners = cove_host.cove("run", name, "--", "stat", "-c", "%u", "/", "/bin", check=True)
    assert owners.stdout == "0\n0\n"
    cove_host.cove("stop", name, check=True)


def test_concurrent_picks_for_one_name_never_map_one_range_and_run_another(
    cove_host: Host, busybox_image: Path
) -> None:
    """Two files declaring the same name start it at once: each guest runs in the range its
    layers were mapped to (the range is locked before the layers are mapped)."""
    name = cove_host.name("twin")
    second = Host(root=cove_host.root / "second", tag=f"{cove_host.tag}b")
    second.root.mkdir()
    hosts = (cove_host, second)
    try:
        for host in hosts:
            host.write(sleeper(name, busybox_image, 'ephemeral = true\nprivate-users = "pick"\n'))
        for _ in range(4):
            starts = [subprocess.Popen([*COVE, "start", name], env={**os.environ,
                      "COVE_CONFIG": str(h.config)}, stdout=subprocess.DEVNULL)
                      for h in hosts]  # fmt: skip
            assert [p.wait(timeout=60) for p in starts] == [0, 0]
            bases = [uid_map(h, name)[1] for h in hosts]
            assert bases[0] != bases[1]
            for host in hosts:
                seen = host.cove("run", name, "--", "stat", "-c", "%u:%g", "/", "/bin", check=True)
                assert seen.stdout == "0:0\n0:0\n"
                host.cove("stop", name, check=True)
            assert not any(Path(idmap.LOCK_DIR, str(b)).exists() for b in bases)
    finally:
        _cleanup(second)


def test_a_persistent_container_whose_range_is_held_is_refused(
    cove_host: Host, busybox_image: Path, held_range: Callable[[int], None]
) -> None:
    name = cove_host.name("taken")
    base = ran_with_pick(cove_host, name, busybox_image)
    held_range(base)
    refused = cove_host.cove("start", name)
    assert refused.returncode == 1
    assert f"UID range {base}-{base + 65535} of {name}'s files is in use" in refused.stderr
    assert not (cove_host.root / "run" / name).exists()


def test_a_file_system_that_cannot_be_id_mapped_is_named_and_nothing_is_made(
    cove_host: Host, busybox_image: Path, ramfs: Path
) -> None:
    name = cove_host.name("ramfs")
    cove_host.write(sleeper(name, busybox_image, 'private-users = "pick"\n' + bind("/data", ramfs)))
    for d in ("state", "run"):
        (cove_host.root / d).mkdir(exist_ok=True)
    before = cove_host.snapshot()
    refused = cove_host.cove("start", name)
    assert refused.returncode == 1
    assert 'private-users = "pick" ID-maps its bind mounts' in refused.stderr, refused.stderr
    assert f'containers.{name}.bind-mounts."/data".host-path: {ramfs} (ramfs:' in refused.stderr
    assert before.difference(cove_host.snapshot()) == {}


def test_a_bind_mount_with_mounts_inside_is_refused_up_front(
    cove_host: Host, busybox_image: Path
) -> None:
    name = cove_host.name("nested")
    data = cove_host.root / "nested"
    (data / "inner").mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "cove-test", str(data / "inner")], check=True)
    try:
        cove_host.write(sleeper(name, busybox_image,
                                'private-users = "pick"\n' + bind("/data", data)))  # fmt: skip
        refused = cove_host.cove("start", name)
        assert refused.returncode == 1
        assert f"mounted inside it: {data / 'inner'}" in refused.stderr, refused.stderr
        assert not (cove_host.root / "run" / name).exists()
    finally:
        subprocess.run(["umount", str(data / "inner")], check=False)


def test_a_booted_host_image_guest_with_picked_users(cove_host: Host) -> None:
    name = cove_host.name("hostpick")
    cove_host.write(f"""\
        [containers.{name}]
        ephemeral = true
        private-users = "pick"
        files = {{ "/etc/motd" = "shifted\\n", "/opt/made/here" = "x" }}
        """)  # fmt: skip
    cove_host.cove("start", name, check=True)
    state = cove_host.cove("run", name, "--", "systemctl", "is-system-running")
    assert state.stdout == "running\n", cove_host.log(name)
    assert uid_map(cove_host, name)[1] >= idmap.FIRST_BASE
    owners = cove_host.cove("run", name, "--", "stat", "-c", "%u:%g %n",
                            "/usr/bin/env", "/etc/passwd", "/etc/motd", "/opt/made",
                            "/opt/made/here", check=True)  # fmt: skip
    assert owners.stdout.splitlines() == [
        "0:0 /usr/bin/env", "0:0 /etc/passwd", "0:0 /etc/motd", "0:0 /opt/made",
        "0:0 /opt/made/here",
    ]  # fmt: skip
    # The host's /usr stays read-only through its ID-mapped mount.
    touch = cove_host.cove("run", name, "--", "touch", "/usr/cove-test")
    assert touch.returncode != 0 and "Read-only file system" in touch.stderr
    # A login session opened through `cove run`: the guest's logind may move the process.
    cove_host.cove("run", name, "--", "su", "-s", "/bin/sh", "nobody", "-c", "true", check=True)
    failed = cove_host.cove("run", name, "--", "systemctl", "--failed", "--no-legend", "--plain")
    assert failed.stdout == ""
    cove_host.cove("stop", name, check=True)
    assert not os.path.exists("/usr/cove-test")
