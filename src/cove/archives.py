"""Images from root-filesystem tarballs (DESIGN §6): `image = "/srv/rootfs.tar.zst"`. An archive
is read whole before anything is written and refused whole if any member could land outside
the image or be written through a link; GNU tar then unpacks exactly the members that were
read, as root, with owners, modes, links and extended attributes kept. Device nodes and FIFOs
are left out: nspawn gives every container its own /dev."""

from __future__ import annotations

import contextlib
import os
import re
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, NoReturn, cast

from cove import proc
from cove.errors import CoveError

if TYPE_CHECKING:
    import tarfile

_HINT = (
    "cove imports archives of a plain root filesystem; make one with "
    "`tar --numeric-owner --xattrs -C ROOT --zstd -cf FILE.tar.zst .`"
)

# Members of these kinds are not unpacked; a hard link to one of them is left out with it.
_SKIPPED_KINDS = frozenset("cbp")

# A line of `tar --list --verbose --numeric-owner --quoting-style=c`: with numeric owners no
# field before the name can hold a double quote, so the first one opens the name.
_LISTED = re.compile(
    r'(?P<kind>\S)\S* [^"]*"(?P<name>(?:[^"\\]|\\.)*)"'
    r'(?:(?: -> | link to )"(?P<link>(?:[^"\\]|\\.)*)")?'
)
_C_ESCAPE = re.compile(rb"\\([0-7]{1,3}|.)", re.DOTALL)
_C_ESCAPES = {b"a": 7, b"b": 8, b"f": 12, b"n": 10, b"r": 13, b"t": 9, b"v": 11}


@dataclass(frozen=True)
class Scan:
    """What `scan` found in an archive that may be unpacked."""

    members: int
    size: int  # bytes of regular-file data
    skipped: tuple[str, ...]  # device nodes and FIFOs (and hard links to them), as named
    # The archive file as it was read; unpacking refuses a file that has changed since.
    fingerprint: tuple[int, ...]


@dataclass(frozen=True)
class _Entry:
    """A member as both readers must see it: kind is the first letter `tar -tv` shows."""

    kind: str
    name: str
    link: str


def identity(path: Path) -> str:
    """The image identity: the same bytes are the same image, wherever the file lies."""
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as archive:
        while chunk := archive.read(1 << 20):
            digest.update(chunk)
    return "tar-" + digest.hexdigest()[:16]


def scan(path: Path) -> Scan:
    """Check every member of the archive at `path`, or raise CoveError naming the first bad one.

    Python's tarfile reads the archive first; then GNU tar, which will unpack it, must list
    the very same members: the two disagree on some malformed headers (tarfile joins a ustar
    prefix to the name in any header, GNU tar only under the POSIX magic; GNU tar skips a
    header with a bad checksum and reads on where tarfile stops), and a member only one of
    them sees would escape the checks made here."""
    fingerprint = _fingerprint(path)
    compression = _compression(path)
    tree = _Tree(path)
    with _decompressed(path, compression) as stream:
        for member in _members(path, stream):
            tree.admit(member)
    _compare(path, tree.entries, _listed(path, compression))
    if _fingerprint(path) != fingerprint:
        raise _changed(path)
    return Scan(len(tree.entries), tree.size, tuple(tree.skipped), fingerprint)


def unpack(path: Path, target: Path, scan: Scan) -> None:
    """Unpack the archive that `scan` checked into the empty directory `target`. If this
    fails, what it leaves in `target` is the caller's to remove."""
    if _fingerprint(path) != scan.fingerprint:
        raise _changed(path)
    if any(target.iterdir()):
        # Nothing outside the archive may be there to be written through.
        raise CoveError(f"cannot unpack {path} into {target}: the directory is not empty")
    result = proc.run(_extract_argv(path, target, scan), check=False)
    if result.returncode != 0:
        raise CoveError(
            f"unpacking {path} failed (tar exited {result.returncode}):\n" + _tail(result.stderr),
            hint=_HINT,
        )
    if _fingerprint(path) != scan.fingerprint:
        raise _changed(path)


def _extract_argv(path: Path, target: Path, scan: Scan) -> list[str]:
    return [
        "tar",
        "--extract",
        f"--file={os.path.abspath(path)}",
        "--force-local",  # a colon in the name must not make it a remote archive
        f"--directory={target}",
        *_decompress_option(_compression(path)),
        "--numeric-owner",  # the owners are the image's, not this host's namesakes
        "--same-owner",
        "--same-permissions",
        # POSIX ACLs come back as the system.posix_acl_* attributes, with numeric ids; not
        # --acls, which reads tar's text form of them and looks its user names up on this host.
        "--xattrs",
        "--xattrs-include=*",  # tar would restore only user.* otherwise
        # overlayfs keeps its state there, and an image is an overlay's lower layer.
        "--xattrs-exclude=trusted.*",
        # Exact names, given one by one: a pattern file (--exclude-from) loses trailing
        # blanks, so "dev/null " would exclude "dev/null" instead.
        "--no-wildcards",
        "--anchored",
        *(f"--exclude={name}" for name in scan.skipped),
    ]


class _Tree:
    """The checks that need the members before: links met, names taken, directories implied."""

    def __init__(self, archive: Path) -> None:
        self.archive = archive
        self.kinds: dict[tuple[str, ...], str] = {}
        self.inside: set[tuple[str, ...]] = set()  # every proper prefix of a name met
        self.skipped: list[str] = []
        self.entries: list[_Entry] = []
        self.size = 0

    def admit(self, member: tarfile.TarInfo) -> None:
        declared = _kind(member)
        if declared is None:
            self._refuse(member.name, f"has a type tar cannot unpack here ({member.type!r})")
        parts = self._checked_name(member.name, declared)
        # A hard link is what it links to: another name for a symlink is a symlink.
        kind = self._checked_hard_link(member) if declared == "h" else declared
        if kind in _SKIPPED_KINDS:
            self.skipped.append(member.name)
        self.kinds[parts] = kind
        self.inside.update(parts[:i] for i in range(len(parts)))
        self.entries.append(_Entry(declared, member.name, member.linkname))
        self.size += member.size if declared == "-" else 0

    def _checked_name(self, name: str, kind: str) -> tuple[str, ...]:
        parts = self._checked_path(name, name, "its name")
        if parts == () and kind != "d":
            self._refuse(name, "names the image root but is not a directory")
        if kind != "d" and name.endswith("/"):
            self._refuse(name, "ends in / but is not a directory")
        earlier = self.kinds.get(parts)
        if earlier is not None and (earlier != "d" or kind != "d"):
            # A file after a symlink of the same name would be written through it: no name
            # may come twice unless both times as a directory.
            self._refuse(name, "appears twice in the archive, not both times as a directory")
        if kind != "d" and parts in self.inside:
            self._refuse(name, "is not a directory, but members before it lie inside it")
        return parts

    def _checked_hard_link(self, member: tarfile.TarInfo) -> str:
        """The kind of the member that the hard link links to."""
        parts = self._checked_path(member.name, member.linkname, "its hard link target")
        kind = self.kinds.get(parts)
        if kind is None or kind == "d":
            self._refuse(
                member.name,
                f"is a hard link to {member.linkname!r}, which is not a file before it",
            )
        return kind

    def _checked_path(self, member: str, path: str, what: str) -> tuple[str, ...]:
        if "\0" in path:
            self._refuse(member, f"has a NUL character in {what}")
        if _without_dot_slash(path).startswith("/"):
            self._refuse(member, f"has an absolute path as {what}")
        parts = tuple(part for part in path.split("/") if part not in ("", "."))
        if ".." in parts:
            self._refuse(member, f"has a '..' component in {what}")
        for i in range(1, len(parts)):
            prefix, kind = "/".join(parts[:i]), self.kinds.get(parts[:i])
            if kind == "l":
                self._refuse(member, f"would be written through the symlink {prefix!r}")
            if kind is not None and kind != "d":
                self._refuse(member, f"lies inside {prefix!r}, which is not a directory")
        return parts

    def _refuse(self, member: str, reason: str) -> NoReturn:
        raise CoveError(
            f"refusing the image archive {self.archive}: its member {member!r} {reason}",
            hint=_HINT,
        )


def _kind(member: tarfile.TarInfo) -> str | None:
    for kind, test in (
        ("-", member.isreg),
        ("d", member.isdir),
        ("l", member.issym),
        ("h", member.islnk),
        ("c", member.ischr),
        ("b", member.isblk),
        ("p", member.isfifo),
    ):
        if test():
            return kind
    return None


def _without_dot_slash(name: str) -> str:
    while name.startswith("./"):
        name = name[2:]
    return name


def _members(path: Path, stream: IO[bytes]) -> Iterator[tarfile.TarInfo]:
    import tarfile
    import zlib

    try:
        with tarfile.open(
            fileobj=stream, mode="r|", encoding="utf-8", errors="surrogateescape"
        ) as archive:
            yield from archive
    except (tarfile.TarError, EOFError, OSError, zlib.error) as e:
        raise CoveError(f"cannot read {path} as a tar archive: {e}", hint=_HINT) from None


@contextlib.contextmanager
def _decompressed(path: Path, compression: str) -> Iterator[IO[bytes]]:
    if compression == "gzip":
        import gzip

        # GzipFile reads every gzip member, as `gzip -d` under tar does; tarfile's own "r|gz"
        # stops after the first, so that a second one would escape the scan.
        with gzip.open(path, "rb") as stream:
            yield cast(IO[bytes], stream)
    elif compression == "zstd":
        with _unzstd(path) as stream:
            yield stream
    else:
        with open(path, "rb") as stream:
            yield stream


@contextlib.contextmanager
def _unzstd(path: Path) -> Iterator[IO[bytes]]:
    """The standard library has no zstd: the zstd program decompresses through a pipe."""
    import subprocess

    program = proc.find_program("zstd")
    if program is None:
        raise CoveError("zstd is not installed", hint="scripts/install installs it")
    argv = [program, "--decompress", "--stdout", "--quiet", "--", str(path)]
    proc.debug("+ " + proc.command_line(argv))
    child = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=proc.clean_env(),
    )
    assert child.stdout is not None and child.stderr is not None
    try:
        yield child.stdout
        # Read to the end, so that zstd finishes and a damaged stream is found.
        while child.stdout.read(1 << 20):
            pass
        if child.wait() != 0:
            errors = child.stderr.read().decode(errors="replace")
            raise CoveError(f"zstd cannot decompress {path}:\n{_tail(errors)}", hint=_HINT)
    finally:
        if child.poll() is None:
            child.kill()
        child.stdout.close()
        child.stderr.close()
        child.wait()


def _listed(path: Path, compression: str) -> list[_Entry]:
    """The members as GNU tar reads them."""
    argv = [
        "tar",
        "--list",
        "--verbose",
        "--numeric-owner",
        "--quoting-style=c",
        f"--file={os.path.abspath(path)}",
        "--force-local",
        *_decompress_option(compression),
    ]
    # In the C locale every byte outside ASCII is an octal escape: the names survive exactly.
    result = proc.run(argv, env=proc.clean_env([("LC_ALL", "C")]), check=False)
    if result.returncode != 0:
        raise CoveError(f"tar cannot read {path}:\n{_tail(result.stderr)}", hint=_HINT)
    entries = []
    for line in result.stdout.splitlines():
        match = _LISTED.fullmatch(line)
        if match is None:
            raise CoveError(f"tar lists {path} in a way cove does not understand: {line}")
        link = _unquote(match["link"]) if match["link"] is not None else ""
        entries.append(_Entry(match["kind"], _unquote(match["name"]), link))
    return entries


def _unquote(quoted: str) -> str:
    """A name from tar's C-style quoting, undone."""

    def byte(escape: re.Match[bytes]) -> bytes:
        code = escape[1]
        if code[:1].isdigit():
            return bytes([int(code, 8) & 0xFF])
        return bytes([_C_ESCAPES.get(code, code[0])])

    raw = _C_ESCAPE.sub(byte, quoted.encode("ascii", "surrogateescape"))
    return raw.decode("utf-8", "surrogateescape")


def _compare(path: Path, read: list[_Entry], listed: list[_Entry]) -> None:
    for number, (ours, tars) in enumerate(zip(read, listed, strict=False), 1):
        if _comparable(ours) != _comparable(tars):
            raise CoveError(
                f"refusing the image archive {path}: its member {number} reads as "
                f"{ours.kind} {ours.name!r} to Python but as {tars.kind} {tars.name!r} to tar",
                hint=_HINT,
            )
    if len(read) != len(listed):
        raise CoveError(
            f"refusing the image archive {path}: Python reads {len(read)} members in it "
            f"but tar {len(listed)}",
            hint=_HINT,
        )


def _comparable(entry: _Entry) -> tuple[str, str, str]:
    # tarfile drops the trailing slashes of directory names; tar shows them.
    return (entry.kind, entry.name.rstrip("/"), entry.link if entry.kind in "hl" else "")


def _compression(path: Path) -> str:
    """From the first bytes, not the name: a .tar.gz that is really zstd is read as zstd."""
    try:
        with open(path, "rb") as archive:
            magic = archive.read(4)
    except OSError as e:
        raise CoveError(f"cannot read {path}: {e.strerror}") from None
    if magic.startswith(b"\x1f\x8b"):
        return "gzip"
    if magic == b"\x28\xb5\x2f\xfd":
        return "zstd"
    return ""


def _decompress_option(compression: str) -> list[str]:
    return {"gzip": ["--gzip"], "zstd": ["--zstd"]}.get(compression, [])


def _fingerprint(path: Path) -> tuple[int, ...]:
    """The file is read more than once: it must be a regular file that nothing rewrites."""
    try:
        st = os.stat(path)
    except OSError as e:
        raise CoveError(f"cannot read {path}: {e.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise CoveError(f"{path} is not a regular file", hint=_HINT)
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _changed(path: Path) -> CoveError:
    return CoveError(
        f"{path} changed while cove was importing it",
        hint="import it again once nothing writes to it",
    )


def _tail(text: str, lines: int = 5) -> str:
    return "\n".join("  " + line for line in text.strip().splitlines()[-lines:])
