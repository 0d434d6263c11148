"""Imperative containers (`cove create`, as `nixos-container create`): one file each,
config-dir/containers/NAME.toml, with the same table the host file would hold, so that plan,
apply and every verb treat them like declared ones; a plan never removes them."""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from cove.config import imperative_dir, imperative_path, name_problem
from cove.errors import CoveError, UsageError
from cove.model import Config


@dataclass(frozen=True)
class Request:
    """What `cove create` was asked for."""

    name: str
    image: str | None = None
    host_address: str | None = None
    local_address: str | None = None
    bridge: str | None = None
    ports: tuple[str, ...] = ()
    auto_start: bool = False
    unique: bool = False


def toml_string(text: str) -> str:
    """A TOML basic string: JSON's escapes are TOML's."""
    return json.dumps(text, ensure_ascii=False)


def forward(spec: str) -> str:
    """An nspawn --port spec, `[tcp|udp:]HOST[:CONTAINER]`, as a forward-ports entry."""
    parts = spec.split(":")
    protocol = parts.pop(0) if parts and parts[0] in ("tcp", "udp") else "tcp"
    if (
        len(parts) not in (1, 2)
        or not all(p.isdigit() for p in parts)
        or not all(1 <= int(p) <= 65535 for p in parts)
    ):
        raise UsageError(
            f"--port {spec!r}: expected [tcp|udp:]HOST-PORT[:CONTAINER-PORT], ports 1-65535"
        )
    entry = f"protocol = {toml_string(protocol)}, host-port = {int(parts[0])}"
    if len(parts) == 2:
        entry += f", container-port = {int(parts[1])}"
    return "{ " + entry + " }"


def container_text(name: str, request: Request, addresses: tuple[str, str] | None) -> str:
    lines = [f"# Made by `cove create`; `cove destroy {name}` removes it.",
             f"[containers.{name}]"]  # fmt: skip
    if request.image:
        lines.append(f"image = {toml_string(request.image)}")
    if request.auto_start:
        lines.append("auto-start = true")
    lines.append("private-network = true")
    if request.bridge:
        lines.append(f"host-bridge = {toml_string(request.bridge)}")
    if addresses:
        lines.append(f"host-address = {toml_string(addresses[0])}")
        lines.append(f"local-address = {toml_string(addresses[1])}")
    if request.ports:
        lines.append(f"forward-ports = [{', '.join(forward(p) for p in request.ports)}]")
    return "\n".join(lines) + "\n"


@contextlib.contextmanager
def _creating(config: Config) -> Iterator[None]:
    """Concurrent creates choose names and write files one at a time."""
    directory = imperative_dir(config.host)
    os.makedirs(directory, mode=0o755, exist_ok=True)
    with open(os.path.join(directory, ".create.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _taken(config: Config, name: str) -> bool:
    host = config.host
    return (
        name in config.containers
        or os.path.lexists(imperative_path(host, name))
        or os.path.lexists(host.container_state(name))
    )


def write(config: Config, request: Request) -> str:
    """Choose the name, take an address pair unless given, write the file; the name."""
    from cove import pool

    if request.bridge is None and (request.host_address is None) != (request.local_address is None):
        raise UsageError("give both --host-address and --local-address, or neither")
    for spec in request.ports:
        forward(spec)  # a bad one stops everything before a name or pair is taken
    if request.image and request.image.startswith("/") and not os.path.exists(request.image):
        raise UsageError(
            f"cannot create {request.name}: --image {request.image}: no such file or directory",
            hint='give a root directory, a root file system archive, "host" or a recipe',
        )
    with _creating(config):
        name = _choose(config, request)
        addresses: tuple[str, str] | None = None
        if request.host_address and request.local_address:
            addresses = (request.host_address, request.local_address)
        elif request.bridge is None:
            declared = [a for c in config.containers.values()
                        for a in (c.local_address, c.host_address) if a]  # fmt: skip
            addresses = pool.allocate(config.host, name, declared)
        try:
            path = imperative_path(config.host, name)
            tmp = os.path.join(os.path.dirname(path), f".{name}.toml.tmp")
            with open(tmp, "w") as f:
                f.write(container_text(name, request, addresses))
            os.replace(tmp, path)
        except BaseException:
            pool.release(config.host, name)
            raise
    return name


def _choose(config: Config, request: Request) -> str:
    base = request.name
    problem = name_problem(base)
    if problem:
        raise UsageError(f"cannot create {base!r}: {problem}")
    candidates: Iterable[str] = [base]
    if request.unique:
        candidates = itertools.chain([base], (f"{base}-{i}" for i in itertools.count()))
    for name in candidates:
        if name_problem(name):
            break
        if not _taken(config, name):
            return name
        if not request.unique:
            where = config.containers[name].source if name in config.containers else None
            raise CoveError(
                f"cannot create {name}: it exists" + (f" (declared in {where})" if where else ""),
                hint="choose another name, or add --ensure-unique-name",
            )
    raise CoveError(f"cannot create {base}: no free name like it")


def remove(config: Config, name: str) -> None:
    """The file of an imperative container and its address pair (its data is destroy's)."""
    from cove import pool

    with contextlib.suppress(FileNotFoundError):
        os.unlink(imperative_path(config.host, name))
    pool.release(config.host, name)
