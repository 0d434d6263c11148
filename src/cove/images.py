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
from typing import TYPE_CHECKING

from cove import cgroups, proc, syscalls
from cove.errors import CoveError, NotFound
from cove.model import Container, HostConfig
from cove.recipes import Recipe, recipe_of

if TYPE_CHECKING:
    from cove.runtimedir import RuntimeDir
from cove.trees import remove_tree


def store(host: HostConfig) -> Path:
    return Path(host.image_store)


def _lock_path(host: HostConfig, identity: str) -> Path:
    return store(host) / f".{identity.lstrip('.')}.lock"


@contextlib.contextmanager
def _locked(host: HostConfig, identity: str, waiting: str | None = None) -> Iterator[None]:
    """The store's lock for one identity. Its file may be removed by whoever holds it (gc,
    rm), so a lock taken on a file that is no longer the one at the path is taken again."""
    store(host).mkdir(mode=0o755, parents=True, exist_ok=True)
    path = _lock_path(host, identity)
    while True:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if waiting:
                say(waiting)
                waiting = None
            fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                break
        except FileNotFoundError:
            pass
        os.close(fd)
    try:
        yield
    finally:
        os.close(fd)


def _forget_lock(host: HostConfig, identity: str) -> None:
    """Called with the lock held, once nothing of the identity is left in the store."""
    with contextlib.suppress(FileNotFoundError):
        _lock_path(host, identity).unlink()


def ensure_recipe(host: HostConfig, recipe: Recipe) -> Path:
    """The built image of `recipe`, building it first if the store lacks it."""
    target = store(host) / recipe.identity
    if target.is_dir():
        return target
    waiting = f"waiting for another build of {recipe.label} ({recipe.identity})"
    with _locked(host, recipe.identity, waiting):
        if target.is_dir():  # built by someone else while we waited
            return target
        _remove_interrupted(host, recipe.identity)
        group = _build_group(host, recipe.identity)
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


def image_of(host: HostConfig, c: Container, make: bool) -> Path | None:
    """The store image a container's file names (None for the host image and directories),
    built or imported first when `make` is set (otherwise an archive is only found if it was
    imported in its present state)."""
    recipe = recipe_of(c.image, c.packages, host.mirrors)
    if recipe is not None:
        return ensure_recipe(host, recipe) if make else store(host) / recipe.identity
    if c.archive_image:
        return ensure_archive(host, c.image) if make else known_archive_image(host, c.image)
    return None


def ensure_archive(host: HostConfig, archive: str) -> Path:
    """The store image of a root file system archive, importing it first if needed. Its
    identity is the hash of its bytes, remembered per file state so later starts only stat."""
    from cove import archives

    path = Path(archive)
    try:
        state = _file_state(path)
    except OSError as e:
        raise CoveError(f"cannot read image archive {archive}: {e.strerror}") from None
    known = known_archive_image(host, archive)
    if known is not None and known.is_dir():
        return known
    identity = archives.identity(path)
    target = store(host) / identity
    with _locked(host, identity, f"waiting for another import of {archive}"):
        if not target.is_dir():
            _remove_interrupted(host, identity)
            say(f"importing {archive} as image {identity}")
            scanned = archives.scan(path)
            if _file_state(path) != state:  # hashed one file, scanned another
                raise CoveError(f"image archive {archive} changed while it was imported")
            tmp = store(host) / f".{identity}.tmp-{os.getpid()}"
            tmp.mkdir(mode=0o700)
            try:
                os.chmod(tmp, 0o755)  # the root's mode, unless the archive has a ./ entry
                archives.unpack(path, tmp, scanned)
                _check_root(tmp, archive)
                make_bootable(tmp)
                os.rename(tmp, target)
            except BaseException:
                with contextlib.suppress(OSError):
                    remove_tree(tmp)
                raise
            _describe(target).write_text(json.dumps({"label": f"archive {archive}"}) + "\n")
        _remember_identity(host, archive, state, identity)
    return target


def _check_root(tree: Path, source: str) -> None:
    if not (tree / "usr").is_dir() or (tree / "usr").is_symlink():
        raise CoveError(
            f"{source} holds no usr/ directory: it is not a root file system (systemd-nspawn "
            "refuses a root without one)",
            hint="archive a whole root: `tar --numeric-owner --xattrs -C ROOT --zstd -cf "
            "FILE.tar.zst .`",
        )


def _file_state(path: Path) -> str:
    st = os.stat(path)
    return f"{st.st_dev}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}"


def _identities_file(host: HostConfig) -> Path:
    return store(host) / ".archives.json"


def _known_identities(host: HostConfig) -> dict[str, list[str]]:
    """Archive path -> [file state, identity] of its last import."""
    try:
        data = json.loads(_identities_file(host).read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {
        k: v
        for k, v in data.items()
        if isinstance(v, list) and len(v) == 2 and all(isinstance(x, str) for x in v)
    }


def known_archive_image(host: HostConfig, archive: str) -> Path | None:
    """The store image of an archive already imported in its present state, without hashing."""
    try:
        state = _file_state(Path(archive))
    except OSError:
        return None
    known = _known_identities(host).get(archive)
    return store(host) / known[1] if known and known[0] == state else None


def _remember_identity(host: HostConfig, archive: str, state: str, identity: str) -> None:
    from cove.runtimedir import write_atomic

    with _locked(host, "archives"):
        known = _known_identities(host)
        known[archive] = [state, identity]
        known = {k: v for k, v in known.items() if (store(host) / v[1]).is_dir()}
        write_atomic(_identities_file(host), json.dumps(known, sort_keys=True) + "\n", 0o644)


def _build_group(host: HostConfig, identity: str) -> cgroups.Group:
    return cgroups.Group(f"{host.cgroup}/build-{identity}")


def _remove_interrupted(host: HostConfig, identity: str) -> None:
    """What a killed build or removal of `identity` left (call with its lock held). A killed
    build's processes live on in its cgroup (debootstrap's subshells outlive their parent):
    they are ended before its tree is removed."""
    _end(_build_group(host, identity))
    for stale in store(host).glob(f".{identity}.tmp-*"):
        remove_tree(stale)
    for stale in store(host).glob(f".{identity}.rm-*"):
        remove_tree(stale)


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
        progress = Progress(recipe.label)
        for line in build.stdout:
            tail = [*tail[-19:], line.rstrip()]
            progress.step(line.strip())
        progress.done()
    if build.returncode != 0:
        raise CoveError(
            f"building {recipe.label} failed (debootstrap exited {build.returncode}):\n"
            + "\n".join("  " + t for t in tail),
            hint=_build_hint(recipe, "\n".join(tail)),
        )
    make_bootable(tmp)


def _build_hint(recipe: Recipe, output: str) -> str:
    if "Couldn't find these debs" in output:
        return f"a package of the recipe does not exist in {recipe.distro} {recipe.suite}"
    if "No such script" in output:
        return f"debootstrap knows no {recipe.distro} suite named {recipe.suite!r}"
    return f"is {recipe.mirror} reachable? The mirror is set in [host]"


def _own_cgroup(group: cgroups.Group) -> None:
    """In the build's process: its own cgroup, so that a later build can end every process of
    this one, and death with the cove that started it."""
    group.join(os.getpid())
    syscalls.prctl(syscalls.PR_SET_PDEATHSIG, signal.SIGKILL)


def make_bootable(root: Path) -> None:
    """Every container gets its own machine identity and nothing of the build host's."""
    (root / "etc").mkdir(mode=0o755, exist_ok=True)
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


def listing(host: HostConfig, users_of: dict[str, list[str]]) -> list[Image]:
    """Every image in the store; `users_of` maps a real path to the containers that use it."""
    found = []
    current_host = os.path.realpath(host.host_base)
    for entry in sorted(store(host).iterdir()) if store(host).is_dir() else []:
        if entry.name.startswith(".") or not entry.is_dir() or entry.is_symlink():
            continue
        try:
            label = str(json.loads(_describe(entry).read_text())["label"])
        except (OSError, ValueError, KeyError):
            label = _label_from_name(entry.name, str(entry) == current_host)
        users = users_of.get(os.path.realpath(entry), [])
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


class Progress:
    """debootstrap's steps: one line rewritten in place on a terminal (with the time spent),
    its milestones as plain lines otherwise (logs, pipes)."""

    MILESTONES = ("I: Retrieving", "I: Validating", "I: Extracting", "I: Unpacking",
                  "I: Configuring", "I: Base system")  # fmt: skip

    def __init__(self, label: str) -> None:
        import time

        self.label = label
        self.began = time.monotonic()
        # No escape codes for a pipe, a dumb terminal or a user who set NO_COLOR.
        self.terminal = (sys.stderr.isatty() and "NO_COLOR" not in os.environ
                         and os.environ.get("TERM") != "dumb")  # fmt: skip
        self.shown = False
        self.phase: str | None = None

    def step(self, line: str) -> None:
        if not line.startswith("I: "):
            return
        if self.terminal:
            import time

            spent = time.monotonic() - self.began
            text = f"cove: building {self.label} [{spent:4.0f}s] {line[3:]}"
            try:
                columns = os.get_terminal_size(sys.stderr.fileno()).columns or 80
            except OSError:
                columns = 80
            width = max(20, columns - 1)
            sys.stderr.write("\r\x1b[K" + text[:width])
            sys.stderr.flush()
            self.shown = True
        else:
            phase = next((m for m in self.MILESTONES if line.startswith(m)), None)
            if phase is not None and phase != self.phase:  # not one line per package
                self.phase = phase
                say("  " + line)

    def done(self) -> None:
        if self.shown:
            sys.stderr.write("\r\x1b[K")
            sys.stderr.flush()


def say(line: str) -> None:
    print(f"cove: {line}", file=sys.stderr, flush=True)


# -- images a persistent container was created from -------------------------------------------
def _record(host: HostConfig, name: str) -> Path:
    return Path(host.container_state(name), "image.json")


def recorded(host: HostConfig, name: str) -> str | None:
    """The store image a persistent container's upper layer was made on, if any."""
    return _recorded_at(_record(host, name))


def _recorded_at(path: Path) -> str | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    identity = data.get("identity") if isinstance(data, dict) else None
    return identity if isinstance(identity, str) else None


def record(host: HostConfig, name: str, identity: str) -> None:
    from cove.runtimedir import write_atomic

    path = _record(host, name)
    claim(host, identity, path, "created-from")  # first: a gc in between must see it
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    write_atomic(path, json.dumps({"identity": identity}) + "\n", mode=0o644)


def store_identity(host: HostConfig, lower: str) -> str | None:
    """The identity of a store image used as a lower layer (not the host's generated /etc,
    which follows the host by design)."""
    path = Path(lower)
    if path.parent != store(host) or path.name.startswith((".", "host")):
        return None
    return path.name


def pin(host: HostConfig, name: str, wanted: str) -> str:
    """The image a persistent container starts from: the one it was created from, whatever the
    file now asks for. Its changes are a layer over that image's files; put over another
    image they could break it. Moving on is `cove image rebase NAME`."""
    kept = recorded(host, name)
    if kept is None:
        record(host, name, wanted)
        return wanted
    if not (store(host) / kept).is_dir():
        raise CoveError(
            f"{name} was created from image {kept}, which is no longer in the store",
            hint=f"`cove image rebase {name}` moves it to {wanted} (its changes are kept)",
        )
    if kept != wanted:
        say(
            f"{name} keeps image {kept} it was created from (the file now asks for {wanted}); "
            f"`cove image rebase {name}` moves it"
        )
    return kept


# -- claims: users of an image that other config files (other state and runtime dirs) know of --
def _claim_file(host: HostConfig, identity: str, holder: Path) -> Path:
    import hashlib

    key = hashlib.sha256(str(holder).encode()).hexdigest()[:16]
    return store(host) / ".users" / identity / key


def claim(host: HostConfig, identity: str, holder: Path, kind: str) -> None:
    """Note in the store that `holder` (a container's image record, kind "created-from", or
    its runtime dir, kind "running") uses the image, for whoever collects garbage in a store
    shared by several files."""
    from cove.runtimedir import write_atomic

    path = _claim_file(host, identity, holder)
    path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    write_atomic(path, json.dumps({"kind": kind, "holder": str(holder)}) + "\n", mode=0o644)


def claimed_users(host: HostConfig, prune: bool = False) -> dict[str, list[str]]:
    """Store path -> holders whose claims still hold; with `prune`, the claims that no longer
    do are removed."""
    from cove.runtimedir import RuntimeDir

    users: dict[str, list[str]] = {}
    claims = store(host) / ".users"
    for directory in sorted(claims.iterdir()) if claims.is_dir() else []:
        for entry in sorted(directory.iterdir()):
            try:
                data = json.loads(entry.read_text())
                kind, holder = data["kind"], Path(data["holder"])
            except (OSError, ValueError, KeyError, TypeError):
                continue
            if kind == "running":
                valid = _runs_on(RuntimeDir.at(holder), store(host) / directory.name)
                name = holder.name
            else:
                valid = _recorded_at(holder) == directory.name
                name = holder.parent.name
            if valid:
                users.setdefault(str(store(host) / directory.name), []).append(name)
            elif prune:
                with contextlib.suppress(FileNotFoundError):
                    entry.unlink()
    return users


def _runs_on(runtime: RuntimeDir, image: Path) -> bool:
    """Whether the container of `runtime` (of any file) is up on `image`: a runtime dir is
    reused by the container's next start, which may be on another image."""
    from cove.runtimedir import Liveness

    if runtime.liveness() is Liveness.ABSENT:
        return False
    lower = runtime.read_status().get("lower")
    if not isinstance(lower, list):
        return True  # still starting: its status does not say yet
    return str(image) in (os.path.realpath(str(p)) for p in lower)


def recorded_users(host: HostConfig) -> dict[str, list[str]]:
    """Store path -> persistent containers (declared or not) created from it."""
    users: dict[str, list[str]] = {}
    containers = Path(host.state_dir, "containers")
    for entry in sorted(containers.iterdir()) if containers.is_dir() else []:
        identity = recorded(host, entry.name)
        if identity is not None:
            users.setdefault(str(store(host) / identity), []).append(entry.name)
    return users


def running_users(host: HostConfig) -> dict[str, list[str]]:
    """Store path -> running containers whose root is made of it, declared or not."""
    from cove.runtimedir import Liveness, RuntimeDir

    users: dict[str, list[str]] = {}
    runtime = Path(host.runtime_dir)
    for entry in sorted(runtime.iterdir()) if runtime.is_dir() else []:
        directory = RuntimeDir(host, entry.name)
        if directory.liveness() is Liveness.ABSENT:
            continue
        lower = directory.read_status().get("lower", [])
        for path in lower if isinstance(lower, list) else []:
            users.setdefault(os.path.realpath(str(path)), []).append(entry.name)
    return users


def merge_users(*maps: dict[str, list[str]]) -> dict[str, list[str]]:
    merged: dict[str, list[str]] = {}
    for users in maps:
        for path, names in users.items():
            merged[path] = sorted({*merged.get(path, []), *names})
    return merged


# -- removal ------------------------------------------------------------------------------------
def check_identity(identity: str) -> None:
    if "/" in identity or identity.startswith(".") or identity in ("", "host"):
        raise CoveError(f"{identity!r} is not an image identity", hint="`cove image list`")


def remove(host: HostConfig, identity: str) -> None:
    """Take an image out of the store: renamed away at once under its lock (so nobody starts
    from a half-removed tree), then deleted."""
    check_identity(identity)
    target = store(host) / identity
    if not target.is_dir() or target.is_symlink():
        raise NotFound(f"no image {identity} in {store(host)}", hint="`cove image list`")
    with _locked(host, identity):
        doomed = store(host) / f".{identity}.rm-{os.getpid()}"
        os.rename(target, doomed)
        with contextlib.suppress(FileNotFoundError):
            _describe(target).unlink()
        remove_tree(doomed)
        remove_tree(store(host) / ".users" / identity)
        _forget_lock(host, identity)


def collect_garbage(host: HostConfig, in_use: dict[str, list[str]]) -> list[str]:
    """Remove every image nobody uses (`in_use`: real paths -> users) and what interrupted
    builds and removals left; returns the identities removed."""
    current_host = os.path.realpath(host.host_base)
    removed = []
    for entry in sorted(store(host).iterdir()) if store(host).is_dir() else []:
        leftover = re.fullmatch(r"\.(.+)\.(?:tmp|rm)-\d+|\.(.+)\.lock", entry.name)
        identity = leftover and (leftover[1] or leftover[2])
        if identity and identity != "archives":
            with _locked(host, identity):  # not while its build is still going
                _remove_interrupted(host, identity)
                if not (store(host) / identity).exists():
                    _forget_lock(host, identity)
            continue
        if entry.name.startswith(".") or entry.is_symlink() or not entry.is_dir():
            continue
        real = os.path.realpath(entry)
        if real == current_host or in_use.get(real):
            continue
        remove(host, entry.name)
        removed.append(entry.name)
    return removed
