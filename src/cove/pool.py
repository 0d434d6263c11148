"""Address pairs for containers that do not declare their own (`cove create`, as
`nixos-container create` does): the N-th /24 of `[host] address-pool` gives N.1 to the host
side and N.2 to the container. Allocations live in the state dir, changed under a lock, so
concurrent creations never get the same pair."""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import json
from collections.abc import Iterable, Iterator
from pathlib import Path

from cove.errors import CoveError
from cove.model import HostConfig
from cove.runtimedir import write_atomic


def _file(host: HostConfig) -> Path:
    return Path(host.state_dir, "addresses.json")


@contextlib.contextmanager
def _locked(host: HostConfig) -> Iterator[dict[str, int]]:
    path = _file(host)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            table = json.loads(path.read_text())
        except (FileNotFoundError, ValueError):
            table = {}
        before = dict(table)
        yield table
        if table != before:
            write_atomic(path, json.dumps(table, sort_keys=True, indent=1) + "\n", 0o644)


def pair(pool: str, index: int) -> tuple[str, str]:
    """The index-th /24 of the pool: (host side .1, container .2)."""
    base = ipaddress.IPv4Network(pool).network_address + index * 256
    return str(base + 1), str(base + 2)


def allocate(host: HostConfig, name: str, taken: Iterable[str] = ()) -> tuple[str, str]:
    """The (host, local) pair of `name`, the same one on every call until it is released;
    `taken` are addresses declared elsewhere, which a new pair must avoid."""
    avoid = {str(ipaddress.ip_interface(a).ip) for a in taken}
    subnets = 2 ** (24 - ipaddress.IPv4Network(host.address_pool).prefixlen)
    with _locked(host) as table:
        if name in table:
            return pair(host.address_pool, table[name])
        used = set(table.values())
        for index in range(subnets):
            if index in used or avoid & set(pair(host.address_pool, index)):
                continue
            table[name] = index
            return pair(host.address_pool, index)
    raise CoveError(
        f"no free address pair left in {host.address_pool} ({subnets} in use)",
        hint="release some (cove destroy) or set a larger address-pool in [host]",
    )


def release(host: HostConfig, name: str) -> None:
    with _locked(host) as table:
        table.pop(name, None)


def allocations(host: HostConfig) -> dict[str, tuple[str, str]]:
    with _locked(host) as table:
        return {n: pair(host.address_pool, i) for n, i in sorted(table.items())}
