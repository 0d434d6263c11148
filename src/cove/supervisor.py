"""The direct backend's per-container supervisor (DESIGN §5).

`cove start` forks it; it runs systemd-nspawn in the container's own cgroup with the root
assembled in a private mount namespace, reads nspawn's notify socket for the container's whole
life (nspawn blocks when nobody reads it), tells the waiting `cove start` through a pipe when
the guest is ready or why it failed, restarts the guest when it reboots (exit 133), serves
stop/terminate/status on a control socket, and cleans up after the container exits.
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import signal
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cove import cgroups, net, proc, quickstart, rootfs, syscalls
from cove.errors import CoveError
from cove.render import HostFacts, Render
from cove.runtimedir import RuntimeDir, remove_nspawn_leftovers
from cove.trees import remove_tree

REBOOT_EXIT = 133
# What the systemd backend's unit does (Restart=on-failure with systemd's defaults), imitated.
RESTART_SEC = 0.1
START_LIMIT_INTERVAL = 10.0
START_LIMIT_BURST = 5
LOG_TAIL = 20
IDLE_TICK = 1.0


def may_restart(starts: deque[float], now: float) -> bool:
    """Start again after a failure unless that makes more than START_LIMIT_BURST starts within
    START_LIMIT_INTERVAL (systemd's start rate limit; `starts` includes this one)."""
    recent = [t for t in starts if now - t < START_LIMIT_INTERVAL]
    return len(recent) <= START_LIMIT_BURST


def log_path(facts: HostFacts, name: str) -> Path:
    return Path(facts.host.log_dir, name, "console.log")


def open_log(path: Path) -> int:
    """The console log of this run; the previous run's is kept as console.log.1."""
    path.parent.parent.mkdir(mode=0o700, parents=True, exist_ok=True)  # log-dir: root's
    path.parent.mkdir(mode=0o700, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        os.replace(path, path.with_name(path.name + ".1"))
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)


def log_tail(path: Path, lines: int = LOG_TAIL) -> list[str]:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 16384))
            text = f.read().decode("utf-8", "replace")
    except FileNotFoundError:
        return []
    import re

    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]|\r", "", text)
    return [line for line in text.splitlines() if line.strip()][-lines:]


def nspawn_env(render: Render, runtime: RuntimeDir) -> dict[str, str]:
    """nspawn's whole environment: nothing of the caller's, and the supervisor's socket."""
    return proc.clean_env([*render.env, ("NOTIFY_SOCKET", str(runtime.notify))])


@dataclass
class Launched:
    """A first boot that quickstart launched before cove was loaded, handed over."""

    config_path: str
    config_data: bytes
    name: str
    report_fd: int | None  # None once `cove start` was told the container is ready
    notify_fd: int
    control_fd: int
    nspawn_pid: int | None
    launch_error: str | None
    leader: int | None
    ready: bool
    stop_requested: bool
    started: float  # time.monotonic() at the launch
    started_at: float
    recent: list[str] = field(default_factory=list)


class Supervisor:
    def __init__(self, render: Render, facts: HostFacts, runtime: RuntimeDir, report: int | None):
        self.render = render
        self.c = render.container
        self.facts = facts
        self.runtime = runtime
        self.report_fd: int | None = report
        self.group = cgroups.Group(f"{facts.host.cgroup}/{self.c.name}")
        self.selector = selectors.DefaultSelector()
        self.waiters: list[socket.socket] = []
        self.nspawn_pid: int | None = None
        self.exit_status: int | None = None
        self.leader: int | None = None
        self.ready = False
        self.stopping = False
        self.stop_deadline: float | None = None
        self.boots = 0
        self.was_ready = False
        self.starts: deque[float] = deque(maxlen=START_LIMIT_BURST + 1)
        self.started_at = time.time()
        self.recent: deque[str] = deque(maxlen=LOG_TAIL)
        self.joined: Callable[[], None] = lambda: None
        self.join_error: str | None = None
        self.failure: str | None = None
        self.failure_log: list[str] = []

    # -- main loop ---------------------------------------------------------------------------
    def run(self, launched: Launched | None = None) -> int:
        syscalls.prctl(syscalls.PR_SET_CHILD_SUBREAPER, 1)
        if launched is None:
            # Moving a process between v1 cgroups waits for an RCU grace period (10-20 ms
            # here): the supervisor's own move happens beside the launch, which waits only
            # for nspawn's.
            joiner = threading.Thread(target=self._join_own_cgroup, name="cgroup")
            joiner.start()
            self.joined = joiner.join
        wake_r, wake_w = socket.socketpair()
        wake_w.setblocking(False)
        signal.set_wakeup_fd(wake_w.fileno())
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD):
            signal.signal(sig, lambda *_: None)
        self.selector.register(wake_r, selectors.EVENT_READ, self._on_signal)
        if launched is None:
            notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            notify.bind(str(self.runtime.notify))
            control = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            control.bind(str(self.runtime.control))
            control.listen(16)
        else:
            notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM, fileno=launched.notify_fd)
            control = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM, fileno=launched.control_fd)
        self.selector.register(notify, selectors.EVENT_READ, self._on_notify)
        self.selector.register(control, selectors.EVENT_READ, self._on_control)
        try:
            if launched is None:
                net.setup(self.c, self.runtime.net_record, self.facts.host.nat_interface)
            self.starts.append(launched.started if launched else time.monotonic())
            while True:
                status = self._boot_once(launched)
                launched = None
                if self.stopping or not self.was_ready:
                    break
                if status == REBOOT_EXIT:
                    self._say("guest asked for a reboot; starting it again")
                    continue
                if status == 0:
                    break
                self.starts.append(time.monotonic())
                if not may_restart(self.starts, time.monotonic()):
                    self._say(
                        f"container exited with status {status}; started {START_LIMIT_BURST} "
                        f"times within {START_LIMIT_INTERVAL:g}s, giving up"
                    )
                    break
                self._say(f"container exited with status {status}; starting it again")
                time.sleep(RESTART_SEC)
            self._say(f"container exited with status {status}")
        except CoveError as e:
            self._fail(e.message)
        except Exception as e:  # the report must reach `cove start` whatever happened
            self._fail(f"supervisor error: {type(e).__name__}: {e}")
        finally:
            self._teardown()
            # Only now: `cove start` returns when this arrives, and must find nothing left.
            if self.failure is not None:
                self._report({"ok": False, "error": self.failure, "log": self.failure_log})
        return 0

    def _join_own_cgroup(self) -> None:
        try:
            self.group.child("cove").join(os.getpid())
        except OSError as e:
            self.join_error = e.strerror or str(e)

    def _boot_once(self, launched: Launched | None = None) -> int:
        self.ready = False
        self.leader = None
        self.exit_status = None
        self.boots += 1
        if launched is None:
            rootfs.prepare(self.render.layout, self.c.name)
            self.nspawn_pid = self._launch()
            self.joined()
            if self.join_error:
                raise CoveError(f"cannot join cgroup {self.group.relative}/cove: {self.join_error}")
            self._write_status("starting")
            start_deadline = time.monotonic() + self.c.timeout_start_sec
        else:
            start_deadline = self._take_over(launched)
        while self.exit_status is None:
            now = time.monotonic()
            if not self.ready and not self.stopping and now >= start_deadline:
                self._fail(f"not ready after {self.c.timeout_start_sec:g}s (timeout-start-sec)")
                self._kill()
            if self.stop_deadline is not None and now >= self.stop_deadline:
                self._say(f"still running {self.c.timeout_stop_sec:g}s after stop; killing it")
                self._kill()
                self.stop_deadline = None
            deadlines = [
                d for d in (self.stop_deadline, None if self.ready else start_deadline) if d
            ]
            timeout = min([IDLE_TICK, *(d - now for d in deadlines)])
            for key, _ in self.selector.select(max(0.0, timeout)):
                key.data(key.fileobj)
            self._reap()
        # Whatever nspawn left behind in its cgroup (it normally leaves nothing).
        nspawn_group = self.group.child("nspawn")
        nspawn_group.kill()
        nspawn_group.wait_empty(5)
        nspawn_group.remove()
        if not self.ready:
            self._fail(
                f"systemd-nspawn exited with status {self.exit_status} before the "
                "container was ready"
            )
        return self.exit_status

    def _take_over(self, launched: Launched) -> float:
        """Carry on from where quickstart left the first boot; the start deadline."""
        self.started_at = launched.started_at
        self.recent.extend(launched.recent)
        if launched.launch_error is not None or launched.nspawn_pid is None:
            raise CoveError(f"cannot run systemd-nspawn: {launched.launch_error}")
        self.nspawn_pid = launched.nspawn_pid
        self.leader = launched.leader  # quickstart logged the command line and the launch
        if launched.ready:
            self.ready = self.was_ready = True
        else:
            self._write_status("starting")
        if launched.stop_requested:
            self._stop()
        return launched.started + self.c.timeout_start_sec

    # -- launching ---------------------------------------------------------------------------
    def _launch(self) -> int:
        argv = list(self.render.argv)
        self._say("+ " + proc.logged_line(argv))

        def prepare() -> None:  # in the child: `argv` is its own copy to change
            argv[:] = rootfs.with_users_range(argv, rootfs.assemble(self.render.layout))

        try:
            return quickstart.spawn(
                argv,
                nspawn_env(self.render, self.runtime),
                prepare,
                self.group.child("nspawn").join,
            )
        except OSError as e:
            raise CoveError(str(e)) from None

    # -- events ------------------------------------------------------------------------------
    def _on_signal(self, sock: Any) -> None:
        data = sock.recv(64)
        for signo in data:
            if signo in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                self._stop()

    def _on_notify(self, sock: Any) -> None:
        while True:
            try:
                datagram = sock.recv(4096, socket.MSG_DONTWAIT)
            except BlockingIOError:
                return
            leader, ready, statuses = quickstart.notice(datagram)
            self.leader = leader or self.leader
            self.recent.extend(statuses)
            if ready and not self.ready:
                self.ready = True
                self._write_status("running")
                self._succeed()

    def _on_control(self, sock: Any) -> None:
        conn, _ = sock.accept()
        conn.settimeout(2)
        try:
            command = conn.recv(64).decode(errors="replace").strip()
        except OSError:
            conn.close()
            return
        if command == "status":
            with contextlib.suppress(OSError):
                conn.sendall(
                    json.dumps(self._status("running" if self.ready else "starting")).encode()
                )
            conn.close()
        elif command == "reload-files":
            with contextlib.suppress(OSError):
                conn.sendall(self._reload_files().encode())
            conn.close()
        elif command in ("stop", "terminate"):
            self.waiters.append(conn)
            if command == "stop":
                self._stop()
            else:
                self._say("terminate requested")
                self.stopping = True
                self._kill()
        else:
            conn.close()

    def _reload_files(self) -> str:
        """`files` as the container's file declares them now, for the next guest reboot
        (`cove apply` has written them into the running root already)."""
        from dataclasses import replace

        from cove.config import load_config
        from cove.render import root_layout

        try:
            config = load_config(self.c.source)
            c = config.containers[self.c.name]
        except (CoveError, KeyError) as e:
            return f"cannot read {self.c.source}: {e}"
        layout = root_layout(c, config.host)
        self.render = replace(
            self.render,
            layout=replace(self.render.layout, files=layout.files, files_dir=layout.files_dir),
        )
        self._say(f"files reloaded from {self.c.source}")
        return "ok"

    def _stop(self) -> None:
        if self.stopping:
            return
        self.stopping = True
        self._say("stop requested")
        self._write_status("stopping")
        if self.nspawn_pid is None or self.exit_status is not None:
            return
        # A booted guest powers off when nspawn passes it SIGRTMIN+3. nspawn's stub init in
        # front of a command exits at once on that signal, killing the command, so a command
        # gets SIGTERM straight from here and the stub follows it out when it exits.
        targets = [self.nspawn_pid] if self.c.boot else self._command_pids()
        for pid in targets:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        self.stop_deadline = time.monotonic() + self.c.timeout_stop_sec

    def _command_pids(self) -> list[int]:
        """The command of a `boot = false` container: the children of nspawn's stub init."""
        if self.leader is None:
            return [self.nspawn_pid] if self.nspawn_pid else []
        try:
            children = Path(f"/proc/{self.leader}/task/{self.leader}/children").read_text()
        except OSError:
            return []
        return [int(pid) for pid in children.split()]

    def _kill(self) -> None:
        if self.nspawn_pid is not None and self.exit_status is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.nspawn_pid, signal.SIGKILL)
        self.group.child("nspawn").kill()

    def _reap(self) -> None:
        """Reap nspawn and whatever orphans were re-parented to us (we are a subreaper)."""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if pid == self.nspawn_pid:
                self.exit_status = os.waitstatus_to_exitcode(status)
                if self.exit_status < 0:
                    self.exit_status = 128 - self.exit_status

    # -- reporting ---------------------------------------------------------------------------
    def _say(self, text: str) -> None:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
        with contextlib.suppress(OSError):
            os.write(2, f"cove[{os.getpid()}] {stamp} {text}\n".encode())

    def _report(self, message: dict[str, Any]) -> None:
        if self.report_fd is None:
            return
        with contextlib.suppress(OSError):
            os.write(self.report_fd, (json.dumps(message) + "\n").encode())
        os.close(self.report_fd)
        self.report_fd = None

    def _succeed(self) -> None:
        self.was_ready = True
        self._report({"ok": True, "leader": self.leader})

    def _fail(self, reason: str) -> None:
        """Remember why the start failed; the report waits until everything is cleaned up."""
        self._say(reason)
        if self.failure is None and self.report_fd is not None:
            self.failure = reason
            self.failure_log = log_tail(log_path(self.facts, self.c.name))

    def _status(self, state: str) -> dict[str, Any]:
        return {
            "version": 1,
            "name": self.c.name,
            "state": state,
            "supervisor": os.getpid(),
            "nspawn": self.nspawn_pid,
            "leader": self.leader,
            "boots": self.boots,
            "started_at": self.started_at,
            "ephemeral": self.c.ephemeral,
            "image": self.c.image,
            # What the root is made of: `cove image gc` spares these while the container runs.
            "lower": list(self.render.layout.lower),
        }

    def _write_status(self, state: str) -> None:
        self.runtime.write_status(self._status(state))

    # -- cleanup -----------------------------------------------------------------------------
    def _teardown(self) -> None:
        """Leave nothing: no process, cgroup, socket or runtime file of this container."""
        self.joined()
        me = os.getpid()
        self.group.kill(exclude=me)
        self.group.wait_empty(5, exclude=me)
        with contextlib.suppress(CoveError):
            net.teardown(self.c, self.runtime.net_record)
        cgroups.Group("").join(me)
        self.group.remove()
        cgroups.Group(self.facts.host.cgroup).remove_if_empty()
        remove_nspawn_leftovers(self.c.name, self.runtime.path)
        with contextlib.suppress(OSError):
            remove_tree(self.runtime.path)
        for conn in self.waiters:
            with contextlib.suppress(OSError):
                conn.close()


def supervise(render: Render, facts: HostFacts, runtime: RuntimeDir, report: int) -> int:
    return Supervisor(render, facts, runtime, report).run()


def adopt(launched: Launched) -> int:
    """Supervise a container quickstart launched: the same file, read then, gives the same
    render the card was made from."""
    from cove.config import parse_config
    from cove.host import probe
    from cove.render import render

    try:
        config = parse_config(launched.config_data, launched.config_path)
        facts = probe(config.host)
        r = render(config.containers[launched.name], facts)
        runtime = RuntimeDir(config.host, launched.name)
        from cove.plan import settings_of

        runtime.write_started(settings_of(r))
    except BaseException as e:  # never leave a guest without its supervisor
        os.write(2, f"cove: cannot take over the launched container: {e!r}\n".encode())
        for fd in (launched.notify_fd, launched.control_fd):
            os.close(fd)
        if launched.nspawn_pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(launched.nspawn_pid, signal.SIGKILL)
        raise
    with contextlib.suppress(CoveError):
        from cove import hostsfile

        hostsfile.sync(config.host.hosts_file, config)
    return Supervisor(r, facts, runtime, launched.report_fd).run(launched)
