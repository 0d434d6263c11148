"""Images from root-filesystem tarballs: what is refused whole, and what imports exactly."""

from __future__ import annotations

import gzip
import io
import os
import shutil
import stat
import struct
import subprocess
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from cove import archives
from cove.errors import CoveError

Member = tuple[tarfile.TarInfo, bytes]


def member(
    name: str,
    kind: bytes = tarfile.REGTYPE,
    *,
    link: str = "",
    data: bytes = b"",
    mode: int = 0o644,
    uid: int = 0,
    gid: int = 0,
) -> Member:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode, info.uid, info.gid = kind, link, mode, uid, gid
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    return info, data


def write_tar(path: Path, members: list[Member], fmt: int = tarfile.GNU_FORMAT) -> Path:
    with tarfile.open(path, "w", format=fmt) as archive:
        for info, data in members:
            archive.addfile(info, io.BytesIO(data) if data else None)
    return path


@pytest.fixture
def places(tmp_path: Path) -> tuple[Path, Path]:
    """An empty target, and beside it an empty directory that the archives aim at."""
    target, outside = tmp_path / "target", tmp_path / "outside"
    target.mkdir()
    outside.mkdir()
    return target, outside


def refused(archive: Path, target: Path) -> CoveError:
    """Import the way the image store does; the scan must stop it before tar runs."""
    with pytest.raises(CoveError) as caught:
        archives.unpack(archive, target, archives.scan(archive))
    assert str(archive) in caught.value.message
    assert caught.value.hint
    return caught.value


HOSTILE: dict[str, Callable[[Path], list[Member]]] = {
    "dot-dot": lambda out: [member("../outside/escape", data=b"x")],
    "absolute": lambda out: [member(f"{out}/abs", data=b"x")],
    "dot-slash-dot-dot": lambda out: [member("./../x", data=b"x")],
    "through-symlink": lambda out: [
        member("link", tarfile.SYMTYPE, link=str(out)),
        member("link/etc/x", data=b"x"),
    ],
    "through-symlink-spelled-oddly": lambda out: [
        member("link", tarfile.SYMTYPE, link=str(out)),
        member("./link//./x", data=b"x"),
    ],
    "hard-link-dot-dot": lambda out: [member("hl", tarfile.LNKTYPE, link="../../etc/passwd")],
    "hard-link-absolute": lambda out: [member("hl", tarfile.LNKTYPE, link="/etc/passwd")],
    "hard-link-through-symlink": lambda out: [
        member("link", tarfile.SYMTYPE, link=str(out)),
        member("hl", tarfile.LNKTYPE, link="link/x"),
    ],
    "hard-link-to-a-later-member": lambda out: [
        member("hl", tarfile.LNKTYPE, link="file"),
        member("file", data=b"x"),
    ],
    "file-over-symlink": lambda out: [
        member("f", tarfile.SYMTYPE, link=f"{out}/f"),
        member("f", data=b"x"),
    ],
    "directory-over-symlink": lambda out: [
        member("d", tarfile.SYMTYPE, link=str(out)),
        member("d", tarfile.DIRTYPE, mode=0o755),
    ],
    "inside-a-file": lambda out: [member("f", data=b"x"), member("f/x", data=b"x")],
    "symlink-over-a-directory-in-use": lambda out: [
        member("d/x", data=b"x"),
        member("d", tarfile.SYMTYPE, link=str(out)),
    ],
    "root-not-a-directory": lambda out: [member("./", tarfile.SYMTYPE, link=str(out))],
}
# The member each case must be refused for.
CULPRIT = {
    "dot-dot": "../outside/escape",
    "absolute": "/abs",
    "dot-slash-dot-dot": "./../x",
    "through-symlink": "link/etc/x",
    "through-symlink-spelled-oddly": "./link//./x",
    "hard-link-dot-dot": "'hl'",
    "hard-link-absolute": "'hl'",
    "hard-link-through-symlink": "'hl'",
    "hard-link-to-a-later-member": "'hl'",
    "file-over-symlink": "'f'",
    "directory-over-symlink": "'d'",
    "inside-a-file": "f/x",
    "symlink-over-a-directory-in-use": "'d'",
    "root-not-a-directory": "'./'",
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_a_hostile_member_refuses_the_whole_archive(
    tmp_path: Path, places: tuple[Path, Path], case: str
) -> None:
    target, outside = places
    harmless = [member("etc", tarfile.DIRTYPE, mode=0o755), member("etc/os-release", data=b"x")]
    archive = write_tar(tmp_path / "hostile.tar", harmless + HOSTILE[case](outside))
    error = refused(archive, target)
    assert CULPRIT[case] in error.message
    assert list(outside.iterdir()) == []
    assert list(target.iterdir()) == [], "nothing is unpacked from a refused archive"


def test_a_name_that_gnu_tar_reads_differently_is_refused(
    tmp_path: Path, places: tuple[Path, Path]
) -> None:
    # An old-GNU header with bytes in the ustar prefix field: tarfile reads "safe/dev/sda",
    # GNU tar "dev/sda", so a skip by name would miss the block device it makes.
    info, _ = member("dev/sda", tarfile.BLKTYPE, mode=0o666)
    header = bytearray(info.tobuf(tarfile.GNU_FORMAT))
    header[345:349] = b"safe"
    header[148:156] = b" " * 8
    header[148:156] = b"%06o\0 " % sum(header)
    archive = tmp_path / "prefix.tar"
    archive.write_bytes(bytes(header) + bytes(10240))
    with tarfile.open(archive) as read:
        assert read.getnames() == ["safe/dev/sda"]
    error = refused(archive, places[0])
    assert "'safe/dev/sda'" in error.message and "'dev/sda'" in error.message
    assert list(places[0].iterdir()) == []


def test_members_hidden_behind_a_damaged_header_are_refused(
    tmp_path: Path, places: tuple[Path, Path]
) -> None:
    # tarfile ends the archive at a header with a bad checksum; GNU tar skips it and reads on.
    damaged = bytearray(member("junk")[0].tobuf(tarfile.GNU_FORMAT))
    damaged[148:156] = b"0000000\0"
    archive = tmp_path / "damaged.tar"
    archive.write_bytes(
        member("ok")[0].tobuf(tarfile.GNU_FORMAT)
        + bytes(damaged)
        + member("dev/sda", tarfile.BLKTYPE, mode=0o666)[0].tobuf(tarfile.GNU_FORMAT)
        + bytes(10240)
    )
    error = refused(archive, places[0])
    assert "Skipping to next header" in error.message
    assert list(places[0].iterdir()) == []


def test_what_is_not_an_archive_is_refused(tmp_path: Path, places: tuple[Path, Path]) -> None:
    archive = tmp_path / "noise.tar"
    archive.write_bytes(os.urandom(20000))
    assert "cannot read" in refused(archive, places[0]).message


def make_tree(root: Path) -> set[str]:
    """A small root filesystem; returns the names of its members that are not unpacked."""
    root.mkdir(mode=0o751)
    os.chmod(root, 0o751)  # not the umask's: the image root takes the archive's mode
    for directory in ("etc", "usr/bin", "home/user", "dev"):
        (root / directory).mkdir(parents=True)
    (root / "etc/os-release").write_text("ID=test\n")
    (root / "etc/localtime").symlink_to("/usr/share/zoneinfo/UTC")
    (root / "bin").symlink_to("usr/bin")
    (root / "usr/bin/su").write_bytes(b"\x7fELF setuid")
    os.chmod(root / "usr/bin/su", 0o4755)
    (root / "usr/bin/ping").write_bytes(b"\x7fELF ping")
    os.setxattr(root / "usr/bin/ping", "security.capability", CAPABILITY)
    os.link(root / "usr/bin/ping", root / "usr/bin/ping4")
    (root / "home/user/a b*c").write_text("odd name\n")
    (root / "home/user/notes").write_text("mine\n")
    os.setxattr(root / "home/user/notes", "system.posix_acl_access", ACL)
    for path in ("home/user", "home/user/a b*c", "home/user/notes"):
        os.chown(root / path, 1234, 5678)
    os.setxattr(root / "home", "trusted.overlay.opaque", b"y")
    # A device named like a file but for a trailing blank, which an --exclude-from file
    # would lose, and a device whose name is a wildcard that would match its neighbour.
    (root / "dev/null").write_text("a plain file\n")
    os.mknod(root / "dev/null ", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    (root / "dev/zer0").write_text("a plain file\n")
    os.mknod(root / "dev/zer*", 0o666 | stat.S_IFCHR, os.makedev(1, 5))
    os.mkfifo(root / "dev/initctl", 0o600)
    return {"./dev/null ", "./dev/zer*", "./dev/initctl"}


# cap_net_raw=ep, as ping has it
CAPABILITY = bytes.fromhex("0100000200200000000000000000000000000000")
# user::rw- user:1234:rwx group::r-- mask::rwx other::r--
ACL = struct.pack(
    "<I" + "HHI" * 5,
    2,
    *(0x01, 6, 0xFFFFFFFF),
    *(0x02, 7, 1234),
    *(0x04, 4, 0xFFFFFFFF),
    *(0x10, 7, 0xFFFFFFFF),
    *(0x20, 4, 0xFFFFFFFF),
)

COMPRESSIONS = {
    "plain": ([], "rootfs.tar"),
    "gzip": (["--gzip"], "rootfs.tar.gz"),
    "zstd": (["--zstd"], "rootfs.tar.zst"),
    # The contents decide, not the name.
    "zstd-named-gz": (["--zstd"], "rootfs.tgz"),
}


@pytest.mark.parametrize("compression", sorted(COMPRESSIONS))
def test_a_root_filesystem_imports_exactly(tmp_path: Path, compression: str) -> None:
    tree = tmp_path / "tree"
    skipped = make_tree(tree)
    option, name = COMPRESSIONS[compression]
    archive = tmp_path / name
    subprocess.run(
        ["tar", "--numeric-owner", "--xattrs", "--xattrs-include=*", "--acls", *option,
         "-C", tree, "-cf", archive, "."],
        check=True,
    )  # fmt: skip
    target = tmp_path / "image"
    target.mkdir(mode=0o700)

    found = archives.scan(archive)
    archives.unpack(archive, target, found)

    assert sorted(found.skipped) == sorted(skipped)
    everything = [tree, *tree.rglob("*")]
    assert found.members == len(everything)
    assert found.size == sum(len(p.read_bytes()) for p in everything if is_file(p)) - len(
        (tree / "usr/bin/ping").read_bytes()
    ), "a hard link's data is in the archive once"
    for source in everything:
        relative = source.relative_to(tree)
        copy = target / relative
        if f"./{relative}" in skipped:
            assert not os.path.lexists(copy), relative
            continue
        assert same_inode_data(source, copy), relative
    assert (target / "dev/null").read_text() == "a plain file\n"
    assert (target / "dev/zer0").read_text() == "a plain file\n"
    assert os.lstat(target / "usr/bin/ping").st_ino == os.lstat(target / "usr/bin/ping4").st_ino
    assert os.getxattr(target / "usr/bin/ping", "security.capability") == CAPABILITY
    assert os.getxattr(target / "home/user/notes", "system.posix_acl_access") == ACL
    assert "trusted.overlay.opaque" not in os.listxattr(target / "home")


def is_file(path: Path) -> bool:
    return stat.S_ISREG(os.lstat(path).st_mode)


def same_inode_data(source: Path, copy: Path) -> bool:
    a, b = os.lstat(source), os.lstat(copy)
    if (a.st_mode, a.st_uid, a.st_gid, a.st_nlink) != (b.st_mode, b.st_uid, b.st_gid, b.st_nlink):
        return False
    if stat.S_ISLNK(a.st_mode):
        return os.readlink(source) == os.readlink(copy)
    if stat.S_ISREG(a.st_mode):
        return source.read_bytes() == copy.read_bytes() and a.st_mtime_ns == b.st_mtime_ns
    return True


def test_devices_are_skipped_by_their_exact_names(
    tmp_path: Path, places: tuple[Path, Path]
) -> None:
    target, _ = places
    odd = ["dev/tty\n1", "dev/back\\slash", "dev/[ab]", "dev/-x", "dev/é"]
    members = [member("dev", tarfile.DIRTYPE, mode=0o755)]
    for name in odd:
        members += [member(name, tarfile.CHRTYPE, mode=0o666), member(name + "~", data=b"x")]
        members.append(member(f"home/{name}", data=b"x"))  # not excluded: an unanchored match
    members += [
        member("dev/a", data=b"plain"),
        member("dev/fifo", tarfile.FIFOTYPE),
        member("dev/again", tarfile.LNKTYPE, link="dev/fifo"),
    ]
    archive = write_tar(tmp_path / "devices.tar", members, tarfile.PAX_FORMAT)
    found = archives.scan(archive)
    assert found.skipped == (*odd, "dev/fifo", "dev/again")
    archives.unpack(archive, target, found)
    assert sorted(os.listdir(target / "dev")) == sorted([*(n[4:] + "~" for n in odd), "a"])
    assert sorted(os.listdir(target / "home/dev")) == sorted(n[4:] for n in odd)


def test_acls_keep_their_numeric_ids(tmp_path: Path, places: tuple[Path, Path]) -> None:
    """GNU tar keeps an ACL twice: as text naming users, and as the attribute with numbers.
    Only the numbers are the image's: "root" is uid 0 here but was 4321 where it was made."""
    info, data = member("f", data=b"x", mode=0o674)
    acl = ACL.replace(struct.pack("<I", 1234), struct.pack("<I", 4321))
    info.pax_headers = {
        "SCHILY.acl.access": "user::rw-\nuser:root:rwx\ngroup::r--\nmask::rwx\nother::r--\n",
        "SCHILY.xattr.system.posix_acl_access": acl.decode("utf-8", "surrogateescape"),
    }
    archive = write_tar(tmp_path / "acl.tar", [(info, data)], tarfile.PAX_FORMAT)
    archives.unpack(archive, places[0], archives.scan(archive))
    assert os.getxattr(places[0] / "f", "system.posix_acl_access") == acl


def test_every_gzip_member_is_read(tmp_path: Path, places: tuple[Path, Path]) -> None:
    """`gzip -d` under tar reads concatenated gzip members; so must the scan, or the ones
    after the first would escape it."""
    whole = write_tar(
        tmp_path / "whole.tar",
        [member(f"f{i}", data=b"x" * 600) for i in range(40)]
        + [member("dev/sda", tarfile.BLKTYPE)],
    ).read_bytes()
    archive = tmp_path / "split.tar.gz"
    archive.write_bytes(gzip.compress(whole[:10240]) + gzip.compress(whole[10240:]))
    found = archives.scan(archive)
    assert found.members == 41
    assert found.skipped == ("dev/sda",)
    archives.unpack(archive, places[0], found)
    assert len(list(places[0].iterdir())) == 40


def test_an_archive_changed_after_its_scan_is_not_unpacked(
    tmp_path: Path, places: tuple[Path, Path]
) -> None:
    archive = write_tar(tmp_path / "a.tar", [member("f", data=b"x")])
    found = archives.scan(archive)
    write_tar(archive, [member("f", data=b"y")])
    with pytest.raises(CoveError, match="changed"):
        archives.unpack(archive, places[0], found)
    assert list(places[0].iterdir()) == []


def test_unpacking_needs_an_empty_target(tmp_path: Path, places: tuple[Path, Path]) -> None:
    archive = write_tar(tmp_path / "a.tar", [member("f", data=b"x")])
    (places[0] / "stale").write_text("")
    with pytest.raises(CoveError, match="not empty"):
        archives.unpack(archive, places[0], archives.scan(archive))


def test_identity_follows_the_bytes(tmp_path: Path) -> None:
    one = write_tar(tmp_path / "one.tar", [member("f", data=b"x" * (3 << 20))])
    same = tmp_path / "elsewhere.tar.gz"
    shutil.copyfile(one, same)
    other = write_tar(tmp_path / "other.tar", [member("f", data=b"y" * (3 << 20))])
    assert archives.identity(one) == archives.identity(same)
    assert archives.identity(one) != archives.identity(other)
    assert archives.identity(one).startswith("tar-") and len(archives.identity(one)) == 20
