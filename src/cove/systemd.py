"""The systemd backend (DESIGN §4): one unit per container, `cove@NAME.service`, written whole
and run by systemd. The unit's own steps (`cove __hook`, `cove __exec`) prepare the root and
the network; here the verbs only install units and ask systemctl.

The same functions as the direct backend, with the same meaning: start returns once the guest
is ready, stop once nothing of it is left."""

from __future__ import annotations

import contextlib
import os
import signal
from dataclasses import replace
from pathlib import Path

from cove import proc
from cove.direct import (
    Observed,
    check_start,
    limit_hint,
    prepare_images,
    remove_state,
    root_shell,
)
from cove.errors import CoveError, NotRunning
from cove.model import Container
from cove.render import HostFacts, Render, unit_file
from cove.runtimedir import write_atomic
from cove.trees import remove_tree

__all__ = ["check_start", "destroy", "exec_in", "observe", "require_up", "root_shell"]

NSENTER = "/usr/bin/nsenter"
JOURNAL_TAIL = 20


def unit_name(name: str) -> str:
    return f"cove@{name}.service"


def unit_path(facts: HostFacts, name: str) -> Path:
    return Path(facts.host.unit_dir, unit_name(name))


def systemctl(*args: str, check: bool = True) -> str:
    result = proc.run(["systemctl", *args], check=False)
    if check and result.returncode != 0:
        raise CoveError(f"systemctl {' '.join(args)} failed: {result.stderr.strip()}")
    return result.stdout


def install(r: Render, facts: HostFacts) -> bool:
    """Write the unit if its text changed, then reload systemd: never a reload for nothing.
    An `auto-start` container's unit is enabled (machines.target wants it at boot)."""
    path = unit_path(facts, r.container.name)
    changed = True
    with contextlib.suppress(FileNotFoundError):
        changed = path.read_text() != r.unit
    if changed:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, r.unit, mode=0o644)
        systemctl("daemon-reload")
    wants = Path(facts.host.unit_dir, "machines.target.wants", unit_name(r.container.name))
    if r.container.auto_start != wants.is_symlink():
        systemctl("enable" if r.container.auto_start else "disable", unit_name(r.container.name))
    return changed


def _properties(name: str) -> dict[str, str]:
    out = systemctl(
        "show", unit_name(name), "--property=ActiveState,SubState,MainPID,Result", check=False
    )
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def _leader(name: str) -> int | None:
    out = proc.run(["machinectl", "show", name, "--property=Leader", "--value"], check=False)
    return int(out.stdout) if out.returncode == 0 and out.stdout.strip().isdigit() else None


def observe(facts: HostFacts, name: str) -> Observed:
    props = _properties(name)
    active = props.get("ActiveState", "inactive")
    state = {"active": "up", "activating": "starting", "deactivating": "stopping",
             "failed": "failed"}.get(active, "down")  # fmt: skip
    status: dict[str, object] = {"unit": unit_name(name), "unit-state": active,
                                 "sub-state": props.get("SubState")}  # fmt: skip
    if state == "up":
        status["leader"] = _leader(name)
    return Observed(name, state, status)


def running_names(facts: HostFacts) -> set[str]:
    """Containers whose unit is active or on its way (starting, stopping, reloading)."""
    listing = systemctl("list-units", "--all", "--plain", "--no-legend", "cove@*.service")
    names = set()
    for line in listing.splitlines():
        unit, _load, active, *_ = [*line.split(), "", "", ""]
        if (
            unit.startswith("cove@")
            and unit.endswith(".service")
            and active
            not in (
                "inactive",
                "failed",
                "",
            )
        ):
            names.add(unit[len("cove@") : -len(".service")])
    return names


def files_changed(facts: HostFacts, r: Render) -> None:
    """Nothing to tell: the unit's ExecStartPre reads the file at every (re)boot."""


def start(r: Render, facts: HostFacts) -> tuple[bool, int | None]:
    """Start the container's unit and return once the guest is ready: (started now, leader)."""
    check_start(r)
    c = r.container
    if observe(facts, c.name).state == "up":
        return False, _leader(c.name)
    r = prepare_images(r, facts)
    # The unit carries the root as it is now (an image a persistent container keeps).
    r = replace(r, unit=unit_file(c, r.layout, facts))
    install(r, facts)
    systemctl("reset-failed", unit_name(c.name), check=False)
    result = proc.run(["systemctl", "start", unit_name(c.name)], check=False)
    if result.returncode != 0:
        raise failed_start(c.name, result.stderr)
    return True, _leader(c.name)


def failed_start(name: str, said: str) -> CoveError:
    """Undo a start systemctl reported failed (`said`: its stderr) and say why. A failed start
    is a failure to systemd: Restart= would try again, and nothing may go on once `cove start`
    has said it failed."""
    systemctl("stop", unit_name(name), check=False)
    systemctl("reset-failed", unit_name(name), check=False)
    tail = "\n".join("  " + line for line in journal_tail(name))
    return CoveError(
        f"{name} failed to start: {said.strip()}\n{tail}",
        hint=limit_hint(tail) or f"journalctl -u {unit_name(name)}",
    )


def journal_tail(name: str, lines: int = JOURNAL_TAIL) -> list[str]:
    out = proc.run(["journalctl", "--unit", unit_name(name), "--lines", str(lines),
                    "--no-pager", "--output=cat"], check=False)  # fmt: skip
    return out.stdout.splitlines()[-lines:]


def stop(facts: HostFacts, c: Container, terminate: bool = False) -> bool:
    """Stop (killed after timeout-stop-sec by systemd, or at once with `terminate`) and return
    once the unit is inactive. A stop asked for here never makes systemd restart it."""
    state = observe(facts, c.name).state
    if state in ("down", "failed"):
        systemctl("reset-failed", unit_name(c.name), check=False)
        return False
    if terminate:
        # Stop first (so that no Restart= follows), with the kill signal made SIGKILL.
        systemctl("kill", f"--signal={signal.SIGKILL.value}", unit_name(c.name), check=False)
    systemctl("stop", unit_name(c.name))
    systemctl("reset-failed", unit_name(c.name), check=False)
    return True


def logs(facts: HostFacts, name: str, lines: int | None, follow: bool) -> int:
    """The unit's journal: nspawn's console, kept by journald after the container stopped
    (ephemeral ones included) for as long as the host's journal keeps it."""
    argv = ["journalctl", f"--unit={unit_name(name)}", "--no-pager", "--output=cat"]
    if lines is not None:
        argv.append(f"--lines={lines}")
    if follow:
        argv.append("--follow")
    journalctl = proc.find_program("journalctl")
    if journalctl is None:
        raise CoveError("journalctl is not installed")
    proc.execve([journalctl, *argv[1:]], proc.clean_env())
    return 1  # not reached


def login(facts: HostFacts, name: str) -> None:
    """machinectl login: a getty of the guest on a pseudo-terminal machined gives us."""
    require_up(facts, name)
    machinectl = proc.find_program("machinectl") or "/usr/bin/machinectl"
    proc.execve([machinectl, "login", name], {**proc.clean_env(),
                "TERM": os.environ.get("TERM", "linux")})  # fmt: skip


def require_up(facts: HostFacts, name: str) -> Observed:
    observed = observe(facts, name)
    leader = observed.leader
    if observed.state != "up" or leader is None:
        raise NotRunning(f"{name}: it is not running", hint=f"start it with: cove start {name}")
    return observed


def exec_in(facts: HostFacts, name: str, command: list[str], env: dict[str, str]) -> None:
    """Replace this process with `command` inside the container (cove run, root-login)."""
    observed = require_up(facts, name)
    assert observed.leader is not None
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    argv = [NSENTER, f"--target={observed.leader}", "--all", "--wd", "--", *command]
    try:
        proc.execve(argv, env)
    except OSError as e:
        raise NotRunning(f"cannot run {NSENTER}: {e.strerror}") from None


def pre_start(r: Render, facts: HostFacts) -> None:
    """The unit's ExecStartPre: the root's directories and the whole network, before nspawn."""
    from cove import net, rootfs
    from cove.plan import settings_of
    from cove.runtimedir import RuntimeDir

    check_start(r)
    runtime = RuntimeDir(facts.host, r.container.name)
    rootfs.prepare(r.layout, r.container.name)
    net.setup(r.container, runtime.net_record, facts.host.nat_interface)
    runtime.path.mkdir(mode=0o700, parents=True, exist_ok=True)
    runtime.write_started(settings_of(r))


def post_stop(c: Container, facts: HostFacts) -> None:
    """The unit's ExecStopPost, whatever way it stopped: nothing of the container is left."""
    from cove import net
    from cove.runtimedir import RuntimeDir, remove_nspawn_leftovers

    runtime = RuntimeDir(facts.host, c.name)
    net.teardown(c, runtime.net_record)
    remove_nspawn_leftovers(c.name, runtime.path)
    remove_tree(runtime.path)
    unregister(c.name)


def unregister(name: str) -> None:
    """An nspawn that was killed never unregistered its machine, and machined forgets it
    only once it notices the unit's cgroup empty: later than Restart= starts it again
    ("Machine ... already exists"). Drop the registration here; no-op when it is gone."""
    from cove.quickunit import UNREGISTER

    proc.run(["busctl", *UNREGISTER, name], check=False)


def forget(facts: HostFacts, name: str) -> list[str]:
    """The unit of a container no file declares any more (it is stopped)."""
    unit = unit_path(facts, name)
    if not unit.exists():
        return []
    systemctl("disable", unit_name(name), check=False)
    unit.unlink()
    systemctl("daemon-reload")
    return [str(unit)]


def destroy(facts: HostFacts, c: Container) -> list[str]:
    """Stop the container, remove its unit, state and logs; returns what was removed."""
    stop(facts, c)
    return [*forget(facts, c.name), *remove_state(facts, c)]
