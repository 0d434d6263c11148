"""`NAME.containers` names on the host: a block of the hosts file that cove owns, one per
config file, listing the local addresses of the containers that file declares."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from pathlib import Path

from cove.errors import CoveError
from cove.model import Config

SUFFIX = ".containers"


def entries(config: Config) -> list[str]:
    lines = []
    for c in sorted(config.containers.values(), key=lambda c: c.name):
        for address in (c.local_address, c.local_address6) if c.private_network else ():
            if address:
                lines.append(f"{address.split('/')[0]}\t{c.name}{SUFFIX}")
    return lines


def markers(source: str) -> tuple[str, str]:
    source = "".join(ch if ch.isprintable() else "?" for ch in source)
    return f"# BEGIN cove {source} (managed by cove)", f"# END cove {source}"


def replace_block(text: str, source: str, lines: list[str]) -> str:
    """`text` with this source's block replaced by `lines` (removed when there are none)."""
    begin, end = markers(source)
    kept: list[str] = []
    inside = False
    for line in text.splitlines():
        if line == begin:
            inside = True
        elif line == end and inside:
            inside = False
        elif not inside:
            kept.append(line)
    if lines:
        kept += [begin, *lines, end]
    return "\n".join(kept) + "\n" if kept else ""


def sync(path: str, config: Config) -> None:
    """Make the hosts file's block for `config` match what it declares now."""
    wanted = entries(config)
    hosts = Path(path)
    try:
        if not wanted and markers(config.path)[0] not in hosts.read_text():
            return  # nothing to add and nothing of ours to remove: no lock, no write
    except FileNotFoundError:
        if not wanted:
            return
    try:
        _sync(hosts, config.path, wanted)
    except OSError as e:
        raise CoveError(f"cannot update {path}: {e.strerror}") from None


def _sync(hosts: Path, source: str, wanted: list[str]) -> None:
    with open(hosts, "a+") as locked:  # a lock among cove processes; readers never wait
        fcntl.flock(locked, fcntl.LOCK_EX)
        locked.seek(0)
        text = locked.read()
        updated = replace_block(text, source, wanted)
        if updated != text:
            _write(hosts, updated)


def _write(hosts: Path, text: str) -> None:
    """Replace atomically; a hosts file that is itself a mount point (as in many containers)
    cannot be renamed over, so it is rewritten in place."""
    tmp = hosts.with_name(f".{hosts.name}.cove.tmp")
    mode = hosts.stat().st_mode & 0o7777 if hosts.exists() else 0o644
    tmp.write_text(text)
    os.chmod(tmp, mode)
    try:
        os.replace(tmp, hosts)
    except OSError as e:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        if e.errno not in (errno.EBUSY, errno.EXDEV):
            raise
        with open(hosts, "r+") as f:
            f.write(text)
            f.truncate()


def drop(path: str, source: str) -> None:
    """Remove the block of a config file that no longer exists."""
    try:
        _sync(Path(path), source, [])
    except OSError as e:
        raise CoveError(f"cannot update {path}: {e.strerror}") from None
