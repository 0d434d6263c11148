"""`cove doctor`: everything cove can leave on a host that belongs to no running container,
and (`--fix`) its removal. It only ever looks at what cove names: its runtime and state dirs,
`cove-NAME` namespaces, the host links, nftables chains, cgroups, units and nspawn directories
of container names cove knows, its blocks of the hosts file, its launch cards. Mounts under
its dirs are reported, never unmounted: cove makes none there that outlive a container, so one
found there is someone else's."""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cove import cgroups, net, netnames, proc, quickstart
from cove.config import name_problem
from cove.errors import CoveError
from cove.model import Config, Container
from cove.nftplan import TABLE, chain
from cove.render import HostFacts
from cove.runtimedir import NSPAWN_PROPAGATE, RuntimeDir
from cove.trees import mount_points_under

RUNNING = ("up", "starting", "stopping")


@dataclass
class Leftover:
    kind: str
    name: str  # the container it was of ("" when none)
    what: str
    fix: Callable[[], None] | None = field(default=None, repr=False, compare=False)
    advice: str = "not cove's to remove: unmount it yourself"  # when there is no fix

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "container": self.name or None, "what": self.what,
                "fixable": self.fix is not None}  # fmt: skip


class Doctor:
    def __init__(self, config: Config, backend: Any, facts: HostFacts) -> None:
        self.config = config
        self.host = config.host
        self.backend = backend
        self.facts = facts

    def container(self, name: str) -> Container:
        return self.config.containers.get(name) or Container(name=name, source=self.config.path)

    # -- finding -------------------------------------------------------------------------------
    def known_names(self) -> set[str]:
        """The names this file's [host] places hold: declared, applied, with a runtime dir,
        a cgroup or a unit. Machine-wide things (namespaces, links, rules) are looked at only
        for these names, and only when nothing uses them: another file's running containers
        are never taken for leftovers."""
        names = set(self.config.containers)
        for directory in (self.host.runtime_dir, str(Path(self.host.state_dir, "applied"))):
            with contextlib.suppress(OSError):
                names.update(n.removesuffix(".json") for n in os.listdir(directory))
        for hierarchy in cgroups.hierarchies():
            with contextlib.suppress(OSError):
                names.update(os.listdir(hierarchy / self.host.cgroup))
        with contextlib.suppress(OSError):
            names.update(n[len("cove@"):-len(".service")] for n in os.listdir(self.host.unit_dir)
                         if n.startswith("cove@") and n.endswith(".service"))  # fmt: skip
        return {n for n in names if name_problem(n) is None}

    def find(self) -> list[Leftover]:
        for cached in ("_link_names", "_chain_names"):
            self.__dict__.pop(cached, None)
        found: list[Leftover] = []
        for name in sorted(self.known_names()):
            state = self.backend.observe(self.facts, name).state
            if state in RUNNING:
                continue
            group = cgroups.Group(f"{self.host.cgroup}/{name}")
            if state == "orphaned" and group.exists() and group.pids():
                # Its supervisor died but the guest runs: a running container, not debris.
                found.append(Leftover("orphaned container", name, f"{name} runs without its "
                                      "supervisor", advice=f"`cove stop {name}` stops it, "
                                      f"`cove start {name}` takes it over"))  # fmt: skip
                continue
            found += self._of_container(name)
        found += self._mounts()
        found += self._hosts_blocks()
        found += self._cards()
        return found

    def _of_container(self, name: str) -> list[Leftover]:
        c = self.container(name)
        runtime = RuntimeDir(self.host, name)
        found = []
        if runtime.path.exists():
            found.append(Leftover("runtime dir", name, str(runtime.path),
                                  lambda: self._reap(c)))  # fmt: skip
        if not _namespace_in_use(netnames.namespace(name)):
            found += self._network_of(c)
        group = cgroups.Group(f"{self.host.cgroup}/{name}")
        if group.exists():
            found.append(Leftover("cgroup", name, group.relative, lambda: _remove_group(group)))
        unit = Path(self.host.unit_dir, f"cove@{name}.service")
        if unit.exists() and name not in self.config.containers:
            found.append(Leftover("unit", name, str(unit),
                                  lambda: self.backend.forget(self.facts, name)))  # fmt: skip
        if hasattr(self.backend, "unregister") and _registered(name):
            found.append(Leftover("machine", name, f"machined registration {name}",
                                  lambda: self.backend.unregister(name)))  # fmt: skip
        propagate = NSPAWN_PROPAGATE / name
        if propagate.exists() and not _nspawn_runs(name):
            found.append(Leftover("nspawn", name, str(propagate),
                                  lambda: _remove_empty_dir(propagate)))  # fmt: skip
        return found

    def _network_of(self, c: Container) -> list[Leftover]:
        name, found = c.name, []
        ns = netnames.namespace(name)
        if os.path.exists(f"/run/netns/{ns}"):
            found.append(Leftover("namespace", name, ns, lambda: self._free_namespace(c)))
        for link in {netnames.host_link(name, False), netnames.host_link(name, True)}:
            if link in self._links():
                found.append(Leftover("link", name, link,
                                      lambda link=link: _delete_link(link)))  # type: ignore[misc]  # fmt: skip
        if name in self._chains():
            found.append(Leftover("nftables", name, f"inet {TABLE} chain {chain(name)}",
                                  lambda: net.remove_rules(c)))  # fmt: skip
        return found

    def _links(self) -> set[str]:
        """This network namespace's links (sysfs shows the namespace that mounted it)."""
        if not hasattr(self, "_link_names"):
            listing = proc.run(["ip", "-o", "link", "show"], check=False).stdout
            self._link_names = {line.split(":")[1].strip().split("@")[0]
                                for line in listing.splitlines() if ":" in line}  # fmt: skip
        return self._link_names

    def _chains(self) -> set[str]:
        if not hasattr(self, "_chain_names"):
            self._chain_names = self._list_chains()
        return self._chain_names

    def _list_chains(self) -> set[str]:
        if proc.find_program("nft") is None:
            return set()
        result = proc.run(["nft", "-j", "list", "chains", "inet"], check=False)
        if result.returncode != 0:
            return set()
        with contextlib.suppress(ValueError):
            items = json.loads(result.stdout).get("nftables", [])
            return {i["chain"]["name"][len("fwd-"):] for i in items
                    if "chain" in i and i["chain"].get("table") == TABLE
                    and i["chain"]["name"].startswith("fwd-")}  # fmt: skip
        return set()

    def _mounts(self) -> list[Leftover]:
        found = []
        for top in (self.host.state_dir, self.host.runtime_dir):
            for point in mount_points_under(Path(top)):
                if os.path.realpath(point) != os.path.realpath(top):  # a dir of its own: fine
                    found.append(Leftover("mount", "", point))  # someone else's: left alone
        return found

    def _hosts_blocks(self) -> list[Leftover]:
        """Blocks of the hosts file whose config file is gone."""
        from cove import hostsfile

        try:
            text = Path(self.host.hosts_file).read_text()
        except OSError:
            return []
        found = []
        for source in re.findall(r"^# BEGIN cove (.*) \(managed by cove\)$", text, re.M):
            if not os.path.exists(source):
                found.append(Leftover("hosts entry", "", f"{self.host.hosts_file}: block of "
                                      f"{source}", lambda source=source:  # type: ignore[misc]
                                      hostsfile.drop(self.host.hosts_file, source)))  # fmt: skip
        return found

    def _cards(self) -> list[Leftover]:
        """Launch cards of config files that are gone, or that this cove would not read."""
        import marshal

        found = []
        with contextlib.suppress(OSError):
            for entry in sorted(os.listdir(quickstart.CARD_DIR)):
                path = os.path.join(quickstart.CARD_DIR, entry)
                try:
                    with open(path, "rb") as f:
                        card = marshal.loads(f.read())
                    source, name = card.get("config"), card.get("name")
                except (OSError, ValueError, EOFError, AttributeError):
                    source = name = None
                # A card under a name this cove would not look for (an older naming) is
                # never used again either.
                if (
                    not isinstance(source, str)
                    or not isinstance(name, str)
                    or not os.path.exists(source)
                    or quickstart.card_path(source, name) != path
                ):
                    found.append(Leftover("launch card", "", path,
                                          lambda path=path: os.unlink(path)))  # type: ignore[misc]  # fmt: skip
        return found

    # -- fixing --------------------------------------------------------------------------------
    def _reap(self, c: Container) -> None:
        """What a stop does for a container whose supervisor (or unit) is gone."""
        if hasattr(self.backend, "post_stop"):
            self.backend.post_stop(c, self.facts)
        else:
            self.backend.stop(self.facts, c, terminate=True)

    def _free_namespace(self, c: Container) -> None:
        """Give back the interfaces the file says were moved in, then delete the namespace
        (the kernel returns physical devices to the initial namespace on its own)."""
        net.teardown(c, RuntimeDir(self.host, c.name).net_record)

    def fix(self, leftovers: list[Leftover]) -> list[tuple[Leftover, str | None]]:
        done: list[tuple[Leftover, str | None]] = []
        for leftover in leftovers:
            if leftover.fix is None:
                done.append((leftover, leftover.advice))
                continue
            try:
                leftover.fix()
            except (CoveError, OSError) as e:
                done.append((leftover, str(e)))
                continue
            done.append((leftover, None))
        return done


def _namespace_in_use(ns: str) -> bool:
    """A process lives in it: a running container (of whichever file), not a leftover."""
    if not os.path.exists(f"/run/netns/{ns}"):
        return False
    return bool(proc.run(["ip", "netns", "pids", ns], check=False).stdout.strip())


def _registered(machine: str) -> bool:
    """machined still lists the machine (its container is not running: a stale entry)."""
    return proc.run(["machinectl", "show", machine, "--property=Name"], check=False).returncode == 0


def _nspawn_runs(machine: str) -> bool:
    """Some systemd-nspawn for this machine name is alive (its propagation dir is in use)."""
    wanted = f"--machine={machine}".encode()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if argv and argv[0].endswith(b"systemd-nspawn") and wanted in argv:
            return True
    return False


def _delete_link(link: str) -> None:
    proc.run(["ip", "link", "delete", link], check=False)


def _remove_group(group: cgroups.Group) -> None:
    group.kill()
    group.wait_empty(10)
    group.remove()


def _remove_empty_dir(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.rmdir()
