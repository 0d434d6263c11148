"""The direct backend: cove runs systemd-nspawn itself, one supervisor per container (DESIGN §5).

Every function here acts on the host; the pure work happened in config and render.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cove import cgroups, net, proc, quickstart
from cove.errors import CoveError, NotRunning, UsageError
from cove.model import Container
from cove.recipes import recipe_of
from cove.render import HostFacts, Render
from cove.runtimedir import Busy, Liveness, RuntimeDir, remove_nspawn_leftovers
from cove.trees import remove_tree

NSENTER = "/usr/bin/nsenter"


@dataclass(frozen=True)
class Observed:
    """What the host says about one container right now."""

    name: str
    state: str  # "up", "down" or "orphaned"
    status: dict[str, Any]

    @property
    def leader(self) -> int | None:
        leader = self.status.get("leader")
        return leader if isinstance(leader, int) else None


def observe(facts: HostFacts, name: str) -> Observed:
    runtime = RuntimeDir(facts.host, name)
    liveness = runtime.liveness()
    if liveness is Liveness.ABSENT:
        return Observed(name, "down", {})
    status = runtime.read_status()
    if liveness is Liveness.ORPHANED:
        return Observed(name, "orphaned", status)
    return Observed(name, "up", status)


def running_names(facts: HostFacts) -> set[str]:
    """Containers with a runtime dir here that are up (or orphaned: they still hold things)."""
    from cove.config import name_problem

    try:
        entries = os.listdir(facts.host.runtime_dir)
    except FileNotFoundError:
        return set()
    return {
        name
        for name in entries
        if name_problem(name) is None and observe(facts, name).state != "down"
    }


def files_changed(facts: HostFacts, r: Render) -> None:
    """The supervisor stages `files` again at each guest reboot: from the file as it is now."""
    runtime = RuntimeDir(facts.host, r.container.name)
    sock = _control(runtime, "reload-files")
    if sock is None:
        raise NotRunning(f"{r.container.name} is not running")
    with sock:
        sock.settimeout(10)
        answer = sock.recv(256).decode(errors="replace").strip()
    if answer != "ok":
        raise CoveError(f"{r.container.name}: its supervisor could not take the new files: "
                        f"{answer or 'no answer'}")  # fmt: skip


def _key_of(c: Container, path: str) -> str:
    """The key of the file that names `path` (a bind-mount source, else the image)."""
    from cove.parsing import key_path

    for mount in c.bind_mounts:
        if mount.host_path == path:
            return f"{key_path('containers', c.name, 'bind-mounts', mount.mount_point)}.host-path"
    return f"{key_path('containers', c.name)}.image"


def check_start(r: Render) -> None:
    """Problems found before anything is created on the host."""
    if r.unsupported:
        c = r.container
        raise CoveError(
            f"cannot start {c.name}: not supported yet: {', '.join(r.unsupported)}",
            hint=f"`cove render {c.name}` shows what "
            + ("it" if len(r.unsupported) == 1 else "they")
            + " will do; remove "
            + ("it" if len(r.unsupported) == 1 else "them")
            + f" from containers.{c.name} in {c.source} to start it now",
        )
    missing = [p for p in r.required_paths if not os.path.exists(p)]
    if missing:
        c = r.container
        raise UsageError(
            f"cannot start {c.name}: {c.source}: "
            + "; ".join(f"{_key_of(c, p)}: {p} does not exist" for p in missing),
            hint=f"create the missing paths or fix containers.{c.name} in {c.source}",
        )
    c = r.container
    if c.directory_image and not os.path.isdir(c.image):
        raise CoveError(f"cannot start {c.name}: image {c.image} is not a directory")
    _check_idmappable(r)
    if c.directory_image and not os.path.isdir(os.path.join(c.image, "usr")):
        raise CoveError(
            f"cannot start {c.name}: image {c.image} has no usr/ directory, and "
            "systemd-nspawn refuses a root without one",
            hint=f"create {os.path.join(c.image, 'usr')} (it may stay empty)",
        )


def _check_idmappable(r: Render) -> None:
    """Under private users every bind mount and the image are ID-mapped: a file system
    that cannot be is named now, before anything exists."""
    from cove import idmap
    from cove.render import shifts_users

    c = r.container
    if not shifts_users(c):
        return
    paths = [m.host_path for m in c.bind_mounts]
    if c.directory_image:
        paths.append(c.image)
    refused = idmap.unmappable(list(dict.fromkeys(paths)))
    for m in c.bind_mounts:
        below = idmap.mounts_below(m.host_path)
        if below:
            refused.append((m.host_path, f"file systems are mounted inside it: {', '.join(below)}"
                            "; bind those on their own"))  # fmt: skip
    if refused:
        mode = c.private_users if c.private_users.isdigit() else f'"{c.private_users}"'
        raise CoveError(
            f"cannot start {c.name}: private-users = {mode} ID-maps its bind mounts and image, "
            "and these cannot be: "
            + "; ".join(f"{_key_of(c, p)}: {p} ({why})" for p, why in refused),
            hint="use sources on file systems that can be ID-mapped (ext4, xfs, btrfs, tmpfs) "
            "with no other file system mounted inside, or set "
            f'private-users = "no" for containers.{c.name} in {c.source}',
        )


def start(r: Render, facts: HostFacts) -> tuple[bool, int | None]:
    """Start the container and return once it is ready: (started now, leader PID)."""
    from cove.plan import settings_of
    from cove.supervisor import log_path, nspawn_env, open_log, supervise

    check_start(r)
    c = r.container
    settings = settings_of(r)  # as a plan renders it: before the store image is put in
    r = prepare_images(r, facts)
    runtime = RuntimeDir(facts.host, c.name)
    try:
        lock_fd, leftover = runtime.claim()
    except Busy:
        return False, observe(facts, c.name).leader
    try:
        if leftover:
            if observe_group(facts, c.name):
                print(f"cove: {c.name} was running without its supervisor: stopping that "
                      "instance, then starting it again", file=sys.stderr)  # fmt: skip
            _reap_orphan(facts, c, runtime, c.timeout_stop_sec)
        else:
            _check_cgroup_free(facts, c)
        _claim_images(facts, r, runtime)
        runtime.write_started(settings)
        log_fd = open_log(log_path(facts, c.name))
    except BaseException:
        with contextlib.suppress(OSError):
            remove_tree(runtime.path)
        os.close(lock_fd)
        raise
    proc.debug("+ " + proc.command_line(r.argv, nspawn_env(r, runtime)))
    line = quickstart.fork_supervisor(
        lock_fd, log_fd, lambda report: supervise(r, facts, runtime, report)
    )
    report = _read_report(line)
    if not report.get("ok"):
        raise start_failure(c.name, line, str(log_path(facts, c.name)))
    leader = report.get("leader")
    return True, leader if isinstance(leader, int) else None


def _read_report(line: bytes) -> dict[str, Any]:
    """What the supervisor said about the start (one JSON line; nothing if it died)."""
    try:
        report = json.loads(line) if line else {"ok": False, "error": "supervisor died"}
    except ValueError:
        report = None
    if not isinstance(report, dict):
        report = {"ok": False, "error": f"unreadable report {line!r}"}
    return report


def start_failure(name: str, line: bytes, log: str) -> CoveError:
    """The error of a start the supervisor reported as failed, with the guest's last output."""
    report = _read_report(line)
    tail = "\n".join("  " + entry for entry in report.get("log", []))
    return CoveError(
        f"{name} failed to start: {report.get('error')}" + (f"\n{tail}" if tail else ""),
        hint=limit_hint(tail) or f"full console log: {log}",
    )


def _claim_images(facts: HostFacts, r: Render, runtime: RuntimeDir) -> None:
    """Images in the store this start is made of, so that no file's gc removes them."""
    store = Path(facts.host.image_store)
    lowers = [Path(os.path.realpath(p)) for p in r.layout.lower]
    used = [p.name for p in lowers if p.parent == store and p.name != "host"]
    if used:
        from cove import images

        for identity in used:
            images.claim(facts.host, identity, runtime.path, "running")


def observe_group(facts: HostFacts, name: str) -> bool:
    """Processes still live in the container's cgroup."""
    return bool(cgroups.Group(f"{facts.host.cgroup}/{name}").pids())


def _check_cgroup_free(facts: HostFacts, c: Container) -> None:
    """Our runtime dir was free, yet the cgroup may hold a container of the same name started
    from another file with the same [host] cgroup: never join (and later kill) it."""
    group = cgroups.Group(f"{facts.host.cgroup}/{c.name}")
    if group.exists() and group.pids():
        raise CoveError(
            f"cannot start {c.name}: cgroup {group.relative} already holds processes "
            "(a container of this name started from another file?)",
            hint="give one of them another name, or another [host] cgroup in one of the files",
        )


def prepare_images(r: Render, facts: HostFacts) -> Render:
    """Build or import the container's store image (before any start timeout runs: that is
    slow), and point the root at the image a persistent container keeps."""
    c = r.container
    if recipe_of(c.image, c.packages, facts.host.mirrors) is None and not c.archive_image:
        return r
    from cove import images

    image = images.image_of(facts.host, c, make=True)
    assert image is not None
    if not (image / "usr").is_dir():
        raise CoveError(
            f"cannot start {c.name}: image {c.image} has no usr/ directory, and "
            "systemd-nspawn refuses a root without one"
        )
    return _pinned(_on_lower(r, image), facts)


def limit_hint(output: str) -> str | None:
    """Booted guests each take several inotify instances, and the kernel's default allows 128
    per user for the whole host: about 25 guests. Say so when a guest ran out."""
    if "inotify" in output and "Too many open files" in output:
        return (
            "the host ran out of inotify instances (each booted guest takes several): raise "
            "them, e.g. `sysctl fs.inotify.max_user_instances=1024` (and in /etc/sysctl.d/)"
        )
    return None


def _on_lower(r: Render, lower: Path) -> Render:
    from dataclasses import replace

    return replace(r, layout=replace(r.layout, lower=(str(lower),)))


def _pinned(r: Render, facts: HostFacts) -> Render:
    """A persistent container on a store image starts from the image it was created from."""
    from cove import images

    wanted = images.store_identity(facts.host, r.layout.lower[0])
    if r.container.ephemeral or wanted is None:
        return r
    kept = images.pin(facts.host, r.container.name, wanted)
    return r if kept == wanted else _on_lower(r, images.store(facts.host) / kept)


def forget(facts: HostFacts, name: str) -> list[str]:
    """Nothing of a stopped container outlives it here but its data (see destroy)."""
    return []


def destroy(facts: HostFacts, c: Container) -> list[str]:
    """Stop the container and remove its state and logs; returns what was removed. A file
    system mounted anywhere in them stops it before anything is removed."""
    stop(facts, c)
    return remove_state(facts, c)


def remove_state(facts: HostFacts, c: Container) -> list[str]:
    """A stopped container's state and logs; a file system mounted anywhere in them stops it
    before anything is removed."""
    host = facts.host
    removed = []
    for path in (Path(host.container_state(c.name)), Path(host.container_log(c.name))):
        if not os.path.lexists(path):
            continue
        try:
            remove_tree(path)
        except OSError as e:
            raise CoveError(
                f"cannot destroy {c.name}: {e.strerror or e}",
                hint="unmount it first; nothing under a mount point is ever removed",
            ) from None
        removed.append(str(path))
    return removed


def _control(runtime: RuntimeDir, command: str) -> socket.socket | None:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(str(runtime.control))
        sock.sendall(command.encode() + b"\n")
    except OSError:
        sock.close()
        return None
    return sock


def stop(facts: HostFacts, c: Container, terminate: bool = False) -> bool:
    """Stop (or kill at once) and wait until nothing of the container is left.
    Returns False when it was not running."""
    name = c.name
    runtime = RuntimeDir(facts.host, name)
    liveness = runtime.liveness()
    if liveness is Liveness.ABSENT:
        return False
    if liveness is Liveness.RUNNING:
        sock = _control(runtime, "terminate" if terminate else "stop")
        if sock is not None:
            with sock:
                # The supervisor closes the connection once everything is cleaned up.
                sock.settimeout(None)
                with contextlib.suppress(OSError):
                    while sock.recv(4096):
                        pass
            _wait_unlocked(runtime)
            return True
    try:
        lock_fd, _ = runtime.claim()
    except Busy:
        raise CoveError(
            f"{name} is busy: its supervisor does not answer", hint="try again in a moment"
        ) from None
    try:
        _reap_orphan(facts, c, runtime, 0 if terminate else c.timeout_stop_sec)
        remove_tree(runtime.path)
    finally:
        os.close(lock_fd)
    return True


def _wait_unlocked(runtime: RuntimeDir, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while runtime.liveness() is Liveness.RUNNING and time.monotonic() < deadline:
        time.sleep(0.01)


def _reap_orphan(facts: HostFacts, c: Container, runtime: RuntimeDir, grace: float) -> None:
    """Tear down a container whose supervisor died: ask nspawn to stop, then kill the rest."""
    name = c.name
    group = cgroups.Group(f"{facts.host.cgroup}/{name}")
    nspawn = runtime.read_status().get("nspawn")
    if isinstance(nspawn, int) and nspawn in group.pids() and grace > 0:
        with contextlib.suppress(ProcessLookupError):
            os.kill(nspawn, signal.SIGTERM)
        group.wait_empty(grace)
    group.kill()
    group.wait_empty(10)
    group.remove()
    cgroups.Group(facts.host.cgroup).remove_if_empty()
    remove_nspawn_leftovers(name, runtime.path)
    net.teardown(c, runtime.net_record)
    for entry in list(runtime.path.iterdir()) if runtime.path.is_dir() else []:
        remove_tree(entry)


def logs(facts: HostFacts, name: str, lines: int | None, follow: bool) -> int:
    from cove.consolelog import show
    from cove.supervisor import log_path

    return show(log_path(facts, name), lines, follow)


def enter_argv(leader: int, command: list[str]) -> list[str]:
    return [NSENTER, f"--target={leader}", "--all", "--wd", "--", *command]


def require_up(facts: HostFacts, name: str) -> Observed:
    observed = observe(facts, name)
    if observed.state != "up" or observed.leader is None:
        why = "its supervisor died" if observed.state == "orphaned" else "it is not running"
        raise NotRunning(f"{name}: {why}", hint=f"start it with: cove start {name}")
    with contextlib.suppress(FileNotFoundError):
        if Path(f"/proc/{observed.leader}").exists():
            return observed
    raise NotRunning(f"{name}: its init process is gone", hint=f"cove stop {name}")


def entry_cgroups(facts: HostFacts, name: str) -> list[Path]:
    """Where a process entering the container goes: its `run` cgroup, beside nspawn's; but
    under private users, a leaf of the tree nspawn gave the guest (`payload`, owned by the
    guest's root), so that the guest may move it, as logind does for `su` or `login`."""
    top = cgroups.Group(f"{facts.host.cgroup}/{name}")
    nspawn = top.child("nspawn").paths()
    payloads = [p / "payload" for p in nspawn]
    if not any(p.is_dir() and p.stat().st_uid != 0 for p in payloads):
        return top.child("run").paths()
    return [p / "cove-run" if p.is_dir() else n for p, n in zip(payloads, nspawn, strict=True)]


def exec_in(facts: HostFacts, name: str, command: list[str], env: dict[str, str]) -> None:
    """Replace this process with `command` inside the container (cove run, root-login)."""
    observed = require_up(facts, name)
    assert observed.leader is not None
    try:
        for directory in entry_cgroups(facts, name):
            directory.mkdir(exist_ok=True)
            (directory / "cgroup.procs").write_text(f"{os.getpid()}\n")
    except OSError as e:
        raise NotRunning(f"{name}: cannot join its cgroup: {e}") from None
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    try:
        proc.execve(enter_argv(observed.leader, command), env)
    except OSError as e:
        raise NotRunning(f"cannot run {NSENTER}: {e.strerror}") from None


def login(facts: HostFacts, name: str) -> None:
    """The guest's own login program on this terminal."""
    observed = require_up(facts, name)
    assert observed.leader is not None
    root = Path(f"/proc/{observed.leader}/root")
    program = next((p for p in ("/bin/login", "/usr/bin/login") if (root / p[1:]).exists()), None)
    if program is None:
        raise NotRunning(f"{name} has no login program", hint=f"cove root-login {name}")
    exec_in(facts, name, [program], {"TERM": os.environ.get("TERM", "linux")})


def root_shell(leader: int) -> str:
    """root's login shell as the guest's /etc/passwd names it, if the guest has it."""
    root = Path(f"/proc/{leader}/root")
    with contextlib.suppress(OSError):
        for line in (root / "etc/passwd").read_text().splitlines():
            fields = line.split(":")
            if len(fields) >= 7 and fields[0] == "root" and fields[6]:
                shell = fields[6]
                if (root / shell.lstrip("/")).exists():
                    return shell
    return "/bin/sh"
