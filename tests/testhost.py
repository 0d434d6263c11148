"""A test host (DESIGN §9): a Debian tree booted with systemd as PID 1 by systemd-nspawn, in
which cove runs on its `systemd` backend. The tree is built once per machine by cove's own
image builder; each test host boots it on a tmpfs overlay, so it starts pristine and leaves
nothing. Its network is private: nothing it does reaches the machine's."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

from cove import cgroups
from tests.images import build_once

PACKAGES = ("systemd-container", "python3", "python3-pip", "iproute2", "nftables", "procps")
REPO = Path(__file__).resolve().parent.parent
NSPAWN = shutil.which("systemd-nspawn") or "/usr/bin/systemd-nspawn"
BOOT_TIMEOUT = 60
STOP_TIMEOUT = 30


def tree(cache: Path) -> Path:
    """The test host's root: debian:bookworm with systemd-container, python3 and tools."""
    config = cache / "testhost-build.toml"
    config.write_text(
        textwrap.dedent(f"""\
        [host]
        backend = "direct"
        image-dir = "{cache}/images"
        state-dir = "{cache}/testhost-state"
        runtime-dir = "{cache}/testhost-run"
        log-dir = "{cache}/testhost-log"
        cgroup = "cove-test-build"
        """)
    )
    argv = [sys.executable, "-m", "cove", "--config", str(config), "image", "build"]
    argv += ["debian:bookworm", *(f"--package={p}" for p in PACKAGES)]
    built = subprocess.run(argv, capture_output=True, text=True, timeout=1800)
    assert built.returncode == 0, built.stderr[-3000:]
    return Path(built.stdout.split(": ", 1)[1].strip())


def wheel(cache: Path) -> Path:
    """cove as a wheel, to install inside a test host (which has no network)."""
    target = cache / "wheels" / f"cove-{_source_key()}"

    def build(tmp: Path) -> None:
        subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir",
             str(tmp), str(REPO)],
            check=True, capture_output=True,
        )  # fmt: skip

    built = build_once(target, build)
    for old in target.parent.glob("cove-*"):  # wheels of earlier sources
        if old != target and not old.name.startswith("."):
            shutil.rmtree(old, ignore_errors=True)
    return built


def _source_key() -> str:
    """Changes whenever a file of the package does."""
    import hashlib

    digest = hashlib.sha256()
    for path in [*sorted((REPO / "src").rglob("*.py")), REPO / "pyproject.toml", REPO / "bin/cove"]:
        digest.update(str(path.relative_to(REPO)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


class TestHost:
    """One booted test host. `run` executes a command inside it, in all its namespaces."""

    __test__ = False  # a helper, not a pytest test class

    def __init__(
        self, tag: str, root: Path, wheels: Path, binds: dict[str, Path], persistent: bool = False
    ) -> None:
        """`persistent`: what it writes outlives a reboot (an overlay whose upper layer is in
        its work dir, instead of nspawn's tmpfs overlay), so that `reboot` can be tested."""
        self.persistent = persistent
        self.tag = tag
        self.machine = f"th-{tag}"
        self.work = Path(f"/var/tmp/cove-testhost-{tag}")
        self.root = root
        self.wheels = wheels
        self.binds = binds
        self.group = cgroups.Group(f"cove-test-th-{tag}")
        self.nspawn: subprocess.Popen[bytes] | None = None
        self.leader: int | None = None
        self.ready = threading.Event()
        self.notify: socket.socket | None = None

    # -- life ----------------------------------------------------------------------------------
    def boot(self) -> None:
        self.work.mkdir(parents=True)
        self.notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.notify.bind(str(self.work / "notify"))
        threading.Thread(target=self._read_notify, daemon=True).start()
        self._launch()
        self.run(
            ["python3", "-m", "pip", "install", "--quiet", "--no-index", "--no-deps",
             "--break-system-packages", *(str(Path("/wheels", w.name))
                                          for w in self.wheels.glob("*.whl"))],
            check=True,
        )  # fmt: skip

    def reboot(self, timeout: float = STOP_TIMEOUT) -> None:
        """`systemctl reboot` inside, then boot it again as its host would (nspawn exits
        with 133 for a reboot)."""
        assert self.nspawn is not None
        self.run(["systemctl", "reboot"])  # may be cut short by the shutdown itself
        status = self.nspawn.wait(timeout)
        assert status == 133, f"test host exited {status} for a reboot"
        self.ready.clear()
        self.leader = None
        self._launch()

    def _launch(self) -> None:
        if self.persistent:
            top = self.work / "root"
            for d in ("upper", "work", "root"):
                (self.work / d).mkdir(exist_ok=True)
            mount = 'mount -t overlay overlay -o "lowerdir=$1,upperdir=$2,workdir=$3" "$4"'
            prefix = ["unshare", "--mount", "--propagation=slave", "--", "sh", "-c",
                      f'{mount} && shift 4 && exec "$@"', "sh", str(self.root),
                      str(self.work / "upper"), str(self.work / "work"), str(top)]  # fmt: skip
            where = [f"--directory={top}"]
        else:
            prefix, where = [], [f"--directory={self.root}", "--volatile=overlay"]
        argv = [
            *prefix, NSPAWN, "--quiet", "--register=no", "--keep-unit", "--notify-ready=yes",
            "--boot", *where, f"--machine={self.machine}",
            # A network of its own: the systemd backend's networks stay inside it.
            "--private-network",
            # overlayfs refuses an upper layer on overlayfs (the test host's root).
            "--tmpfs=/var/lib/cove",
            f"--bind-ro={self.wheels}:/wheels",
            *(f"--bind-ro={source}:{target}" for target, source in self.binds.items()),
            "systemd.firstboot=off",
        ]  # fmt: skip
        env = {
            "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
            "NOTIFY_SOCKET": str(self.work / "notify"),
            "SYSTEMD_NSPAWN_UNIFIED_HIERARCHY": "1",
        }
        self.group.create()
        with open(self.work / "console.log", "ab") as console:
            self.nspawn = subprocess.Popen(
                argv,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=console,
                stderr=subprocess.STDOUT,
                preexec_fn=lambda: self.group.join(os.getpid()),
            )
        if not self.ready.wait(BOOT_TIMEOUT) or self.leader is None:
            raise AssertionError(f"test host not ready:\n{self.console()[-3000:]}")

    def _read_notify(self) -> None:
        """Read for its whole life: nspawn blocks once nobody reads its notify socket."""
        assert self.notify is not None
        with contextlib.suppress(OSError):
            while True:
                for line in self.notify.recv(4096).decode(errors="replace").splitlines():
                    if line.startswith("X_NSPAWN_LEADER_PID="):
                        self.leader = int(line.split("=", 1)[1])
                    elif line == "READY=1":
                        self.ready.set()

    def stop(self, timeout: float = STOP_TIMEOUT) -> bool:
        """Power it off (SIGTERM to nspawn), killed after `timeout`; its cgroup removed.
        Returns whether it powered off in time."""
        clean = True
        if self.nspawn is not None and self.nspawn.poll() is None:
            self.nspawn.send_signal(signal.SIGTERM)  # the nspawn this harness started
            try:
                self.nspawn.wait(timeout)
            except subprocess.TimeoutExpired:
                clean = False
                self.group.kill()
                self.nspawn.wait(10)
        self.group.kill()
        self.group.wait_empty(10)
        self.group.remove()
        cgroups.Group("cove-test-th").remove_if_empty()
        if self.notify is not None:
            self.notify.close()
        shutil.rmtree(self.work, ignore_errors=True)
        with contextlib.suppress(OSError):
            os.rmdir(f"/run/systemd/nspawn/propagate/{self.machine}")
        return clean

    # -- use -----------------------------------------------------------------------------------
    def run(
        self, argv: list[str], input: str | None = None, check: bool = False, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        assert self.leader is not None
        env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
               "LANG": "C.UTF-8"}  # fmt: skip
        result = subprocess.run(
            ["nsenter", f"--target={self.leader}", "--all", "--", *argv],
            input=input,
            capture_output=True,
            text=True,
            env=env,
            timeout=timeout,
            stdin=None if input is not None else subprocess.DEVNULL,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"{' '.join(argv)} exited {result.returncode} in the test host\n"
                f"stdout: {result.stdout}\nstderr: {result.stderr}"
            )
        return result

    def write(self, path: str, text: str) -> None:
        self.run(["sh", "-c", 'mkdir -p "$(dirname "$1")" && cat > "$1"', "sh", path],
                 input=text, check=True)  # fmt: skip

    def console(self) -> str:
        path = self.work / "console.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def wait_until(self, argv: list[str], expected: str, timeout: float = 30) -> str:
        deadline = time.monotonic() + timeout
        while True:
            out = self.run(argv).stdout
            if out == expected or time.monotonic() > deadline:
                return out
            time.sleep(0.1)
