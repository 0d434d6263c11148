"""`cove import-nixos`: the JSON of a NixOS host's `containers` (what
`nix eval --json .#nixosConfigurations.HOST.config.containers` prints, with or without each
container's `config`) as a cove.toml. Pure: text in, text and notes out.

Keys are NixOS option names in kebab-case (DESIGN §2), so the conversion is mechanical: every
option the settings table names is carried, nulls and defaults are left out, `bindMounts` are
keyed by their mount point, a `forwardPorts` entry without `containerPort` keeps that meaning.
What cannot be carried (the guest's NixOS `config`, `path`, `flake`, unknown options) becomes
a comment on the container, so nothing is lost silently.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cove.settings import CONTAINER_SETTINGS

BY_NIXOS = {s.nixos: s for s in CONTAINER_SETTINGS if s.nixos}
NEEDS_PRIVATE_NETWORK = {"host-bridge", "host-address", "host-address6", "local-address",
                         "local-address6", "local-mac-address", "forward-ports", "interfaces",
                         "macvlans", "extra-veths"}  # fmt: skip
# Options of the guest's own system, or of how NixOS builds it: nothing for cove to run.
NOT_CARRIED = {
    "config": "the guest's NixOS configuration cannot be carried: give the container an "
    '`image` (a root directory, an archive, or a recipe such as "debian:bookworm") with that '
    'system in it; until then it boots the host\'s own /usr (image = "host")',
    "path": "`path` (a NixOS system closure) has no cove equivalent: see `image`",
    "flake": "`flake` has no cove equivalent: build the guest's root and point `image` at it",
    "nixpkgs": "`nixpkgs` is about building the guest's NixOS system: not carried",
    "specialArgs": "`specialArgs` is about building the guest's NixOS system: not carried",
    "pkgs": "`pkgs` is about building the guest's NixOS system: not carried",
}


@dataclass
class Converted:
    containers: dict[str, dict[str, Any]] = field(default_factory=dict)
    notes: dict[str, list[str]] = field(default_factory=dict)


def kebab(name: str) -> str:
    """`hostAddress6` → `host-address6`, `isReadOnly` → `is-read-only`."""
    return re.sub(r"(?<=[a-z0-9])([A-Z])", lambda m: "-" + m[1].lower(), name)


def _plain(value: Any) -> Any:
    """Nested NixOS attribute sets with kebab-case keys, nulls dropped."""
    if isinstance(value, Mapping):
        return {kebab(k): _plain(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _bind_mounts(value: Mapping[str, Any]) -> dict[str, Any]:
    mounts = {}
    for attr, entry in value.items():
        entry = entry or {}
        point = entry.get("mountPoint") or attr
        mount = {"host-path": entry.get("hostPath") or point}
        if entry.get("isReadOnly") is False:
            mount["is-read-only"] = False
        mounts[point] = mount
    return mounts


def _empty(value: Any) -> bool:
    return value is None or value == [] or value == {}


def convert_container(name: str, options: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    table: dict[str, Any] = {}
    notes: list[str] = []
    for option, value in options.items():
        if option in NOT_CARRIED:
            if not _empty(value):
                notes.append(NOT_CARRIED[option])
            continue
        setting = BY_NIXOS.get(option)
        if setting is None:
            if not _empty(value) and value is not False:
                notes.append(f"`{option}` = {value!r} has no cove key: not carried")
            continue
        if _empty(value) or value == setting.default:
            continue
        if option == "bindMounts":
            table[setting.key] = _bind_mounts(value)
        elif option == "extraVeths":
            table[setting.key] = {veth: _plain(entry) for veth, entry in value.items()}
        else:
            table[setting.key] = _plain(value)
    ignored = sorted(k for k in table if k in NEEDS_PRIVATE_NETWORK)
    if ignored and not table.get("private-network"):
        for key in ignored:
            del table[key]
        notes.append(f"{', '.join(ignored)} left out: NixOS ignores them without privateNetwork"
                     " (cove refuses them)")  # fmt: skip
    if table.get("private-users", "no") != "no":
        notes.append("private-users is carried, but cove does not run it yet: `cove start` "
                     "refuses the container until it is removed")  # fmt: skip
    if any("forward-ports" in veth for veth in table.get("extra-veths", {}).values()):
        notes.append("extra-veths forward-ports are carried: cove forwards them (check that you "
                     "want that)")  # fmt: skip
    if "config" not in options and "path" not in options and "flake" not in options:
        notes.append("no guest system given: it boots the host's own /usr (image = \"host\"); "
                     "set `image` for another root")  # fmt: skip
    return table, notes


def convert(document: Any) -> Converted:
    """The JSON document: {NAME: {option: value}}."""
    if not isinstance(document, Mapping):
        raise ValueError('expected a JSON object of containers, {"NAME": {options}}')
    converted = Converted()
    for name in sorted(document):
        options = document[name]
        if not isinstance(options, Mapping):
            raise ValueError(f"containers.{name}: expected an object of options")
        table, notes = convert_container(name, options)
        converted.containers[name] = table
        converted.notes[name] = notes
    return converted


def to_toml(converted: Converted, source: str) -> str:
    import tomli_w

    parts = [f"# Converted from {source} by `cove import-nixos`: check the notes below.\n"]
    for name, table in converted.containers.items():
        parts.append("\n")
        parts += [f"# NOTE {name}: {note}\n" for note in converted.notes[name]]
        body = tomli_w.dumps({"containers": {name: table}})
        parts.append(body if table else f"[containers.{name}]\n")
    return "".join(parts)
