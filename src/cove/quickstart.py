"""The launch-first path of `cove start` on the direct backend (and the door to quickunit, its
systemd counterpart).

nspawn needs about 50 ms to start a command container; loading cove, reading and checking the
file and rendering cost more than that. So each start through the normal path leaves a *launch
card*: that container's checked render as plain data, valid while the config file (device,
inode, size, mtime, ctime), cove's code and systemd-nspawn's binary stay the same. The next
`cove start NAME` reads the card with the cheapest modules of the standard library, launches
nspawn at once and returns as soon as nspawn reports the container ready; only then does the
supervisor load the rest of cove and take over as after a normal start.

Anything out of the ordinary goes the normal way, which deals with it and says what happened:
no card or a stale one, a running or left-over container, a container that needs host
networking, a store image or `files`, a host /etc changed since the host image's generated root
was made, not being root.

Cards live in CARD_DIR (a tmpfs: gone at reboot), one file per config file and container,
readable and writable by root only; `cove destroy` and a start that finds the container gone
from its file remove them.
"""

from __future__ import annotations

import fcntl
import marshal
import os
import sys
import time

TYPE_CHECKING = False  # typing itself costs this path about 5 ms
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from cove.model import Config
    from cove.render import HostFacts, Render

CARD_DIR = "/run/cove-launch"
CARD_FORMAT = 1
SYSTEMD_RUNNING = "/run/systemd/system"


def file_stamp(st: os.stat_result) -> tuple[int, ...]:
    """What changes when a file is replaced or written to."""
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def dir_stamp(path: str) -> tuple[int, ...] | None:
    """A directory's identity and mtime: changes when a file is added to it or removed."""
    try:
        return file_stamp(os.stat(path))
    except OSError:
        return None


def code_stamp() -> tuple[Any, ...]:
    """cove's own code: a card written by other code is not trusted."""
    from cove import __version__

    here = os.path.dirname(os.path.abspath(__file__))
    newest = max(e.stat().st_mtime_ns for e in os.scandir(here) if e.name.endswith(".py"))
    return (__version__, CARD_FORMAT, sys.version, newest)


def card_path(config_path: str, name: str) -> str:
    """A short file name for (file, name). hashlib would cost this path 3 ms and zlib's crc32
    0.6 ms to import; a 32-bit FNV-1a checksum does, since the card names its file and one of
    another file is never used."""
    digest = 0x811C9DC5
    for byte in config_path.encode("utf-8", "surrogateescape"):
        digest = ((digest ^ byte) * 0x01000193) & 0xFFFFFFFF
    return os.path.join(CARD_DIR, f"{digest:08x}-{name}")


LAUNCHED_FROM_CARD = "launched from its launch card"
# What a card serves: `start` on both backends, the others on systemd only (quickunit).
CARD_VERBS = ("start", "stop", "__hook pre-start", "__hook post-stop")
# In a container's runtime dir: the settings it was started with (RuntimeDir.started_file).
STARTED_FILE = "started.json"
# nspawn's per-machine propagation dirs: left after a kill (runtimedir.remove_nspawn_leftovers)
NSPAWN_PROPAGATE_DIR = "/run/systemd/nspawn/propagate"


def notice(datagram: bytes) -> tuple[int | None, bool, list[str]]:
    """What nspawn says on its notify socket: (leader PID, READY=1 seen, STATUS= lines)."""
    leader, ready, statuses = None, False, []
    for line in datagram.decode(errors="replace").splitlines():
        key, _, value = line.partition("=")
        if key == "X_NSPAWN_LEADER_PID" and value.isdigit():
            leader = int(value)
        elif key == "READY" and value == "1":
            ready = True
        elif key == "STATUS":
            statuses.append(value)
    return leader, ready, statuses


# -- writing, after a start through the normal path --------------------------------------------
def eligible(r: Render) -> bool:
    layout = r.layout
    return not (
        r.net
        or r.unsupported
        or layout.files_dir
        or r.container.archive_image
        or layout.private_users != "no"  # its range is checked at each start
    )


def remember(config: Config, r: Render, facts: HostFacts, log: str) -> None:
    """Write the card of a container just started through the normal path (or remove a card
    that no longer applies). Best effort: without a card the next start is only slower."""
    from cove import cgroups, proc
    from cove.config import imperative_dir
    from cove.model import Backend
    from cove.recipes import recipe_of
    from cove.runtimedir import RuntimeDir

    c = r.container
    try:
        nspawn = file_stamp(os.stat(r.argv[0]))
        if (
            not config.stamp
            or c.source != config.path  # an imperative container: its own file decides
            or facts.backend is not Backend.DIRECT
            or not eligible(r)
            or recipe_of(c.image, c.packages, facts.host.mirrors) is not None
        ):
            forget(config.path, c.name)
            return
        runtime = RuntimeDir(config.host, c.name)
        imperative = imperative_dir(config.host)
        group = cgroups.Group(f"{config.host.cgroup}/{c.name}")
        layout = r.layout
        card = {
            "key": (config.stamp, code_stamp(), nspawn, dir_stamp(imperative)),
            "imperative": imperative,
            "config": config.path,
            "name": c.name,
            "auto_backend": config.host.backend is Backend.AUTO,
            "runtime": str(runtime.path),
            "notify": str(runtime.notify),
            "control": str(runtime.control),
            "status": str(runtime.status_file),
            "cgroups": [str(p) for p in group.paths()],
            "log": log,
            "argv": list(r.argv),
            # What the supervisor logs before the launch (environment values redacted).
            "logged": "+ " + proc.logged_line(r.argv),
            "env": proc.clean_env([*r.env, ("NOTIFY_SOCKET", str(runtime.notify))]),
            "exist": [
                *r.required_paths,
                *((c.image, os.path.join(c.image, "usr")) if c.directory_image else ()),
            ],
            "root": layout.root,
            "lower": list(layout.lower),
            "upper": layout.upper,
            "work": layout.work,
            "scratch": layout.scratch,
            "scratch_size": layout.scratch_size,
            "host_usr": layout.host_usr,
            # The host image: the generated root the card was made with, and this one's layer.
            "host_base": layout.host_base,
            # The start just pointed this link at the root made for the host's /etc as it is.
            "host_key": os.readlink(layout.host_base) if layout.host_base else None,
            "base": layout.base,
            "timeout_start": float(c.timeout_start_sec),
            "ephemeral": c.ephemeral,
            "image": c.image,
        }
        write_card(config, c.name, card)
    except (OSError, ValueError):
        forget(config.path, c.name)


def write_card(config: Config, name: str, card: dict[str, Any]) -> None:
    """Atomically, root's only; the cards of containers the file dropped go."""
    path = card_path(config.path, name)
    os.makedirs(CARD_DIR, mode=0o700, exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(marshal.dumps(card))
    os.replace(tmp, path)
    _prune(config)


def _prune(config: Config) -> None:
    """Cards of containers this file no longer declares."""
    forget_all(config.path, keep=set(config.containers))


def forget_all(config_path: str, keep: set[str] | frozenset[str] = frozenset()) -> None:
    """Every card of a file, but those of `keep`."""
    prefix = os.path.basename(card_path(config_path, ""))
    try:
        entries = os.listdir(CARD_DIR)
    except FileNotFoundError:
        return
    for entry in entries:
        if entry.startswith(prefix) and entry[len(prefix) :] not in keep:
            forget(config_path, entry[len(prefix) :])


def forget(config_path: str, name: str) -> None:
    try:
        os.unlink(card_path(config_path, name))
    except OSError:
        pass


# -- reading, at `cove start NAME` -------------------------------------------------------------
def _words(argv: list[str]) -> tuple[str, list[str]] | None:
    """(config file, the other words) of a command line with at most one `--config FILE`
    before or after the verb."""
    config, rest, words = None, [], iter(argv)
    for word in words:
        if word == "--config" and config is None:
            config = next(words, None)
            if config is None:
                return None
        elif word.startswith("--config=") and config is None:
            config = word.partition("=")[2]
        else:
            rest.append(word)
    path = config or os.environ.get("COVE_CONFIG") or "/etc/cove/cove.toml"
    return os.path.abspath(path), rest


def _match(argv: list[str]) -> tuple[str, str, str] | None:
    """(verb, config file, name) of `cove VERB NAME` for a verb of CARD_VERBS (one name, no
    other option than one `--config FILE` before or after the verb), or None."""
    words = _words(argv)
    if words is None:
        return None
    config, rest = words
    if len(rest) < 2 or rest[-1].startswith("-"):
        return None
    verb = " ".join(rest[:-1])
    return (verb, config, rest[-1]) if verb in CARD_VERBS else None


def _request(argv: list[str]) -> tuple[str, str] | None:
    """(config file, name) of `cove start NAME`."""
    matched = _match(argv)
    return matched[1:] if matched is not None and matched[0] == "start" else None


def _hook_request(argv: list[str]) -> tuple[str, str] | None:
    """(config file, name) of a systemd unit's `cove --config=FILE __hook pre-start NAME`."""
    matched = _match(argv)
    return matched[1:] if matched is not None and matched[0] == "__hook pre-start" else None


def _load(config_path: str, name: str) -> tuple[dict[str, Any], bytes] | None:
    """The card and the config file's bytes, if the card is still true of the file."""
    try:
        held = os.stat(CARD_DIR)
        if held.st_uid != 0 or held.st_mode & 0o077:
            return None
        with open(card_path(config_path, name), "rb") as f:
            card = marshal.loads(f.read())
        with open(config_path, "rb") as f:
            data = f.read()
            stamp = file_stamp(os.fstat(f.fileno()))
        if not isinstance(card, dict) or card.get("name") != name:
            return None
        if card.get("config") != config_path:
            return None
        # A card is for one backend: with `backend = "auto"`, the one PID 1 gives now.
        if card["auto_backend"] and os.path.isdir(SYSTEMD_RUNNING) != bool(card.get("unit")):
            return None
        nspawn = file_stamp(os.stat(card["argv"][0]))
        key = (stamp, code_stamp(), nspawn, dir_stamp(card["imperative"]))
        if card.get("key") != key:
            return None
        return card, data
    except (OSError, ValueError, EOFError, TypeError, KeyError, IndexError):
        return None


def start(argv: list[str]) -> int | None:
    """A command of CARD_VERBS through its card: the exit code, or None to take the normal
    path. On the direct backend only `cove start NAME`; the systemd verbs are quickunit's."""
    if os.geteuid() != 0:
        return None
    matched = _match(argv)
    if matched is None:
        return None
    verb, config_path, name = matched
    loaded = _load(config_path, name)
    if loaded is None:
        return None
    card, data = loaded
    if card.get("unit"):
        from cove import quickunit

        return quickunit.run(verb, card)
    if verb != "start":
        return None
    if not all(os.path.exists(p) for p in card["exist"]) or not host_base_current(card):
        return None
    claimed = _claim(card)
    if claimed is None:
        return None
    lock_fd, log_fd = claimed
    line = fork_supervisor(lock_fd, log_fd, lambda report: _supervise(card, data, report))
    if line.startswith(b'{"ok": true, "leader": '):
        leader = line.partition(b'"leader": ')[2].rstrip(b"}\n").decode()
        print(f"{card['name']}: started (leader PID {leader})")
        return 0
    from cove.cli import report_error
    from cove.direct import start_failure

    return report_error(start_failure(card["name"], line, card["log"]))


def fork_supervisor(lock_fd: int, log_fd: int, supervise: Callable[[int], int]) -> bytes:
    """Fork the container's supervisor: a session of its own, the console log as its output,
    the runtime dir's lock and nothing else of ours. It runs `supervise(report_fd)`; this
    returns the one line it reports (empty if it died before)."""
    report_r, report_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the supervisor; exits through os._exit
        code = 1
        try:
            os.close(report_r)
            os.setsid()
            devnull = os.open(os.devnull, os.O_RDONLY)
            os.dup2(devnull, 0)
            os.dup2(log_fd, 1)
            os.dup2(log_fd, 2)
            close_other_fds(0, 1, 2, report_w, lock_fd)
            code = supervise(report_w)
        finally:
            os._exit(code)
    os.close(report_w)
    os.close(log_fd)
    os.close(lock_fd)
    with os.fdopen(report_r, "rb") as f:
        line = f.readline()
    try:  # the supervisor is not our child for long: init reaps it once we exit
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
    return line


def close_other_fds(*keep: int) -> None:
    """A supervisor outlives the command that started it: it must not hold that command's
    files open (an apply's lock, a caller's pipe), only its own."""
    low = 0
    for fd in sorted(set(keep)):
        if low < fd:  # closerange(n, n) would close everything from n on (close_range(n, -1))
            os.closerange(low, fd)
        low = fd + 1
    os.closerange(low, os.sysconf("SC_OPEN_MAX"))


def _claim(card: dict[str, Any]) -> tuple[int, int] | None:
    """Lock a new runtime dir and open the console log, or None (and nothing made) when the
    container runs, was left over, or its cgroup is not free: the normal path sorts that out."""
    runtime = card["runtime"]
    os.makedirs(os.path.dirname(runtime), mode=0o700, exist_ok=True)
    try:
        os.mkdir(runtime, 0o700)
    except FileExistsError:
        return None
    fd = os.open(runtime, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:  # made by another start a moment ago: it owns it
        os.close(fd)
        return None
    try:
        if os.fstat(fd).st_nlink == 0 or any(_holds_processes(d) for d in card["cgroups"]):
            raise FileExistsError
        log = card["log"]
        os.makedirs(os.path.dirname(os.path.dirname(log)), mode=0o700, exist_ok=True)
        os.makedirs(os.path.dirname(log), mode=0o700, exist_ok=True)
        try:
            os.replace(log, log + ".1")
        except FileNotFoundError:
            pass
        log_fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        make_root_dirs(card)
    except OSError:
        _remove_runtime(card)
        os.close(fd)
        return None
    return fd, log_fd


def make_root_dirs(card: dict[str, Any]) -> None:
    """rootfs.prepare() for a card: the directories of the root, and the host image's layer of
    this container (the host image's generated root is checked by host_base_current)."""
    os.makedirs(card["root"], exist_ok=True)
    if card["base"]:
        from cove.hostetc import write_container_layer

        write_container_layer(card["base"], card["name"])
    if card["scratch"]:
        os.makedirs(card["scratch"], exist_ok=True)
    else:
        state = os.path.dirname(card["upper"])  # state-dir/containers/NAME: root's only
        for d in (os.path.dirname(os.path.dirname(state)), os.path.dirname(state), state):
            os.makedirs(d, mode=0o700, exist_ok=True)
        os.chmod(state, 0o700)
        for d in (card["upper"], card["work"]):
            os.makedirs(d, mode=0o755, exist_ok=True)


def host_base_current(card: dict[str, Any]) -> bool:
    """The host image's generated root is the one for the host's /etc as it is now (else the
    normal path makes the new one)."""
    if not card["host_base"]:
        return True
    from cove.hostetc import host_base_key

    key = host_base_key()
    try:
        link = os.readlink(card["host_base"])
        return bool(link == card["host_key"] == f"host-{key}")
    except OSError:
        return False


def _holds_processes(group: str) -> bool:
    """cgroups.Group.pids() for one hierarchy, without pathlib (this path avoids its import)."""
    for top, _, files in os.walk(group):
        if "cgroup.procs" in files:
            with open(os.path.join(top, "cgroup.procs"), "rb") as f:
                if f.read().strip():
                    return True
    return False


def _remove_runtime(card: dict[str, Any]) -> None:
    from pathlib import Path

    from cove.trees import remove_tree

    try:
        remove_tree(Path(card["runtime"]))
    except OSError:
        pass


# -- the supervisor's first moments ------------------------------------------------------------
def _supervise(card: dict[str, Any], data: bytes, report: int) -> int:
    """Launch nspawn, wait for READY=1 (or its exit, the start timeout, a signal), tell
    `cove start`, then load the rest of cove and carry on as the normal supervisor."""
    import _signal  # type: ignore[import-not-found]  # signal.py would load enum

    sockets: list[Any] = []

    def make_sockets() -> None:
        """The notify and control sockets, made while nspawn's child is being placed."""
        import _socket

        notify = _socket.socket(_socket.AF_UNIX, _socket.SOCK_DGRAM)
        sockets.append(notify)
        notify.bind(card["notify"])
        control = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
        sockets.append(control)
        control.bind(card["control"])
        control.listen(16)

    began, started_at = time.monotonic(), time.time()
    stop = []
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    _signal.set_wakeup_fd(wake_w)
    for sig in (_signal.SIGTERM, _signal.SIGINT, _signal.SIGHUP):
        _signal.signal(sig, lambda *_: stop.append(True))
    _signal.signal(_signal.SIGCHLD, lambda *_: None)
    launch_error = None
    _say(card["logged"])
    try:
        nspawn: int | None = _launch(card, make_sockets)
        _say(f"{LAUNCHED_FROM_CARD} (pid {nspawn})")
    except OSError as e:
        nspawn, launch_error = None, str(e)
    import _socket
    import select

    if len(sockets) < 2:  # the launch failed before they were made: unbound stand-ins for
        for sock in sockets:  # the supervisor, which only reports that failure
            sock.close()
        sockets[:] = [_socket.socket(_socket.AF_UNIX, _socket.SOCK_DGRAM),
                      _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)]  # fmt: skip
    notify, control = sockets
    for d in card["cgroups"]:  # the supervisor's own place, beside nspawn's
        _join(os.path.join(d, "cove"))
    deadline = began + card["timeout_start"]
    leader: int | None = None
    ready = False
    recent: list[str] = []
    while nspawn and not (ready or stop) and time.monotonic() < deadline:
        readable, _, _ = select.select(
            [notify.fileno(), wake_r], [], [], max(0.0, deadline - time.monotonic())
        )
        if wake_r in readable:
            os.read(wake_r, 512)
            if os.waitid(os.P_PID, nspawn, os.WEXITED | os.WNOHANG | os.WNOWAIT):
                break
        if notify.fileno() in readable:
            said_leader, said_ready, statuses = notice(notify.recv(4096))
            leader = said_leader or leader
            ready = ready or said_ready
            recent += statuses
    if ready and nspawn:
        _write_status(card, nspawn, leader, started_at)
        os.write(report, f'{{"ok": true, "leader": {leader}}}\n'.encode())
        os.close(report)
    os.close(wake_r)
    os.close(wake_w)
    from cove.supervisor import Launched, adopt

    return adopt(
        Launched(
            config_path=card["config"],
            config_data=data,
            name=card["name"],
            report_fd=None if ready else report,
            notify_fd=notify.detach(),
            control_fd=control.detach(),
            nspawn_pid=nspawn,
            launch_error=launch_error,
            leader=leader,
            ready=ready,
            stop_requested=bool(stop),
            started=began,
            started_at=started_at,
            recent=recent,
        )
    )


def _say(text: str) -> None:
    """A line of the console log, as the supervisor writes them (its stderr is the log)."""
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
    try:
        os.write(2, f"cove[{os.getpid()}] {stamp} {text}\n".encode())
    except OSError:
        pass


def _launch(card: dict[str, Any], meanwhile: Callable[[], None]) -> int:
    """Mount the root and exec nspawn in a child put in the nspawn cgroup: its PID.
    `meanwhile` runs here while the child is being placed."""

    def prepare() -> None:
        from cove import overlay

        overlay.mount_root(
            card["root"],
            card["lower"],
            card["upper"],
            card["work"],
            card["scratch"],
            card["scratch_size"],
            card["host_usr"],
        )

    def place(pid: int) -> None:
        for d in card["cgroups"]:
            _join(os.path.join(d, "nspawn"), pid)

    return spawn(card["argv"], card["env"], prepare, place, meanwhile)


def spawn(
    argv: list[str],
    env: dict[str, str],
    prepare: Callable[[], None],
    place: Callable[[int], None],
    meanwhile: Callable[[], None] | None = None,
) -> int:
    """Fork a child that takes back the default signal dispositions, runs `prepare` (its
    mounts) and execs `argv` once `place(pid)`, run here at the same time, has put it in its
    cgroup: a cgroup move waits for an RCU grace period (5-30 ms on v1 hierarchies), which
    then overlaps the child's own work instead of adding to it, and `meanwhile` too (run here
    while a thread places the child). Returns the child's PID once the exec happened, or
    raises OSError saying why it did not."""
    import _signal  # signal.py would load enum

    err_r, err_w = os.pipe()  # close-on-exec: EOF tells the exec worked
    go_r, go_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child, then execs
        try:
            os.close(err_r)
            os.close(go_w)
            for sig in (_signal.SIGPIPE, _signal.SIGTERM, _signal.SIGINT, _signal.SIGHUP,
                        _signal.SIGCHLD):  # fmt: skip
                _signal.signal(sig, _signal.SIG_DFL)
            _signal.set_wakeup_fd(-1)
            prepare()
            if os.read(go_r, 1) != b"1":  # not placed: the parent says why
                os._exit(127)
            os.execve(argv[0], argv, env)
        except BaseException as e:
            why = getattr(e, "message", None) or f"{type(e).__name__}: {e}"
            try:
                os.write(err_w, str(why).encode())
            except BaseException:
                pass
        os._exit(127)
    os.close(err_w)
    os.close(go_r)
    misplaced: str | None = "interrupted while placing it"
    try:
        misplaced = _place(place, pid, meanwhile)
    finally:  # the child waits for this byte, whatever happened here
        try:
            os.write(go_w, b"0" if misplaced else b"1")
        except BrokenPipeError:  # the child failed first; it says why below
            pass
        os.close(go_w)
    with os.fdopen(err_r, "rb") as f:
        failure = f.read().decode(errors="replace")
    if failure or misplaced:
        os.waitpid(pid, 0)
        raise OSError(failure or misplaced)
    return pid


def _place(
    place: Callable[[int], None], pid: int, meanwhile: Callable[[], None] | None
) -> str | None:
    """Run `place(pid)`, in a thread when there is `meanwhile` work for this one: why it
    failed, or None."""
    failed: list[str] = []

    def run() -> None:
        try:
            place(pid)
        except OSError as e:
            failed.append(f"cannot put systemd-nspawn in its cgroup: {e}")

    if meanwhile is None:
        run()
        return failed[0] if failed else None
    import _thread  # threading would load more than it needs

    done = _thread.allocate_lock()
    done.acquire()

    def in_thread() -> None:
        try:
            run()
        finally:
            done.release()

    _thread.start_new_thread(in_thread, ())
    try:
        meanwhile()
    except OSError as e:
        failed.append(str(e))
    finally:
        done.acquire()
    return failed[0] if failed else None


def _join(group: str, pid: int | None = None) -> None:
    os.makedirs(group, exist_ok=True)
    with open(os.path.join(group, "cgroup.procs"), "w") as f:
        f.write(f"{pid or os.getpid()}\n")


def _write_status(card: dict[str, Any], nspawn: int, leader: int | None, started_at: float) -> None:
    """The status file `cove status` reads, as the normal supervisor writes it once ready."""
    from _json import encode_basestring_ascii as quote

    lower = ", ".join(quote(p) for p in card["lower"])
    text = (
        f'{{"boots": 1, "ephemeral": {"true" if card["ephemeral"] else "false"}, '
        f'"image": {quote(card["image"])}, "leader": {"null" if leader is None else leader}, '
        f'"lower": [{lower}], "name": {quote(card["name"])}, "nspawn": {nspawn}, '
        f'"started_at": {started_at!r}, "state": "running", "supervisor": {os.getpid()}, '
        f'"version": 1}}\n'
    )
    tmp = card["status"] + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, card["status"])
