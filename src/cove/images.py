"""The image store (DESIGN §6): immutable trees named by their identity. A build happens in a
temporary directory and is renamed into place whole, under a lock per identity, so a killed
build leaves no image and two concurrent requests build once."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import signal
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from cove import cgroups, proc, syscalls
from cove.errors import CoveError
from cove.model import HostConfig
from cove.recipes import Recipe
from cove.runtimedir import remove_tree


def store(host: HostConfig) -> Path:
    return Path(host.image_store)


@contextlib.contextmanager
def _locked(host: HostConfig, identity: str) -> Iterator[None]:
    store(host).mkdir(mode=0o755, parents=True, exist_ok=True)
    with open(store(host) / f".{identity}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def ensure_recipe(host: HostConfig, recipe: Recipe) -> Path:
    """The built image of `recipe`, building it first if the store lacks it."""
    target = store(host) / recipe.identity
    if target.is_dir():
        return target
    with _locked(host, recipe.identity):
        if target.is_dir():  # built by someone else while we waited
            return target
        # A build that was killed: we hold its lock now. Its processes live on in its cgroup
        # (debootstrap's subshells outlive their parent); end them before removing its tree.
        group = cgroups.Group(f"{host.cgroup}/build-{recipe.identity}")
        _end(group)
        for stale in store(host).glob(f".{recipe.identity}.tmp-*"):
            remove_tree(stale)
        tmp = store(host) / f".{recipe.identity}.tmp-{os.getpid()}"
        try:
            _build(recipe, tmp, group)
            os.rename(tmp, target)
        except BaseException:
            _end(group)  # nothing of the build may go on writing into what is removed next
            with contextlib.suppress(OSError):
                remove_tree(tmp)
            raise
        _end(group)
        _describe(target).write_text(json.dumps({"label": recipe.label}) + "\n")
    return target


def _end(group: cgroups.Group) -> None:
    """Every process of a build, then its cgroup."""
    group.kill()
    group.wait_empty(10)
    group.remove()
    cgroups.Group(group.relative.split("/")[0]).remove_if_empty()


def _build(recipe: Recipe, tmp: Path, group: cgroups.Group) -> None:
    import subprocess

    argv = recipe.debootstrap_argv(str(tmp))
    argv[0] = proc.find_program("debootstrap") or "/usr/sbin/debootstrap"
    say(f"building image {recipe.label} ({recipe.identity}); this takes a minute or two")
    proc.debug("+ " + proc.command_line(argv))
    with subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=proc.clean_env(),
        preexec_fn=lambda: _own_cgroup(group),
    ) as build:
        assert build.stdout is not None
        tail: list[str] = []
        for line in build.stdout:
            tail = [*tail[-19:], line.rstrip()]
            if line.startswith(("I: Retrieving", "I: Validating", "I: Extracting",
                                "I: Unpacking", "I: Configuring", "I: Base system")):  # fmt: skip
                say("  " + line.strip())
    if build.returncode != 0:
        raise CoveError(
            f"building {recipe.label} failed (debootstrap exited {build.returncode}):\n"
            + "\n".join("  " + t for t in tail),
            hint=f"is {recipe.mirror} reachable? The mirror is set in [host]",
        )
    make_bootable(tmp)


def _own_cgroup(group: cgroups.Group) -> None:
    """In the build's process: its own cgroup, so that a later build can end every process of
    this one, and death with the cove that started it."""
    group.join(os.getpid())
    syscalls.prctl(syscalls.PR_SET_PDEATHSIG, signal.SIGKILL)


def make_bootable(root: Path) -> None:
    """Every container gets its own machine identity and nothing of the build host's."""
    (root / "etc/machine-id").write_text("")
    for leftover in ("var/lib/dbus/machine-id", "etc/hostname"):
        with contextlib.suppress(FileNotFoundError):
            (root / leftover).unlink()
    for cache in ("var/cache/apt/archives", "var/lib/apt/lists"):
        for entry in (root / cache).glob("*"):
            if entry.is_file() and entry.name != "lock":
                entry.unlink()


def _describe(image: Path) -> Path:
    """Where an image's label is kept: beside it, since the tree itself is the guest's."""
    return image.with_name(f".{image.name}.json")


@dataclass(frozen=True)
class Image:
    identity: str
    label: str
    path: Path
    size: int
    used_by: tuple[str, ...]


def listing(host: HostConfig, lowers: dict[str, list[str]]) -> list[Image]:
    """Every image in the store; `lowers` maps a path to the containers whose root uses it."""
    found = []
    current_host = os.path.realpath(host.host_base)
    for entry in sorted(store(host).iterdir()) if store(host).is_dir() else []:
        if entry.name.startswith(".") or not entry.is_dir() or entry.is_symlink():
            continue
        try:
            label = str(json.loads(_describe(entry).read_text())["label"])
        except (OSError, ValueError, KeyError):
            label = _label_from_name(entry.name, str(entry) == current_host)
        users = lowers.get(str(entry), [])
        if str(entry) == current_host:
            users = users + lowers.get(str(host.host_base), [])
        found.append(Image(entry.name, label, entry, _size(entry), tuple(sorted(users))))
    return found


def _label_from_name(name: str, current_host: bool) -> str:
    if name.startswith("host-"):
        return "host /etc (current)" if current_host else "host /etc"
    recipe = re.fullmatch(r"([a-z]+)-([a-z][a-z0-9-]*)-[0-9a-f]{16}", name)
    return f"{recipe[1]}:{recipe[2]}" if recipe else "?"


def _size(tree: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(tree):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(root, name)).st_blocks * 512
    return total


def say(line: str) -> None:
    print(f"cove: {line}", file=sys.stderr, flush=True)
