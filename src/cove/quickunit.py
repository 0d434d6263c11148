"""The launch-first path on the systemd backend.

A systemd start runs cove three times: `cove start` (read the file, render, install the unit,
`systemctl start`), the unit's pre-start hook (read the file again, make the root's
directories and the network) and its ExecStart (mount the root, exec nspawn). Loading cove and
reading the file is most of the first two. So, as on the direct backend (quickstart.py), a
start through the normal path leaves a launch card, here holding what the client and the hook
need: while the file, cove, nspawn and the installed unit stay as they were, `cove start NAME`
and `cove stop NAME` only ask systemctl, the pre-start hook only makes the root's directories
and the post-stop hook only removes the runtime dir and machined's registration.

Cards are for containers whose hook has nothing else to do: the same containers as on the
direct backend (no network, `files`, store image or private users). Anything else, or anything
out of the ordinary (a unit changed by hand, auto-start enabled or disabled by hand, a unit
starting or stopping, a host /etc changed since its generated root was made), goes the normal
way. Only the modules the card path itself needs are imported here.
"""

from __future__ import annotations

import os

from cove.quickstart import (
    NSPAWN_PROPAGATE_DIR,
    STARTED_FILE,
    file_stamp,
    host_base_current,
    make_root_dirs,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from cove.model import Config
    from cove.render import HostFacts, Render

FROM_CARD = "pre-start: from its launch card"
STOPPED_FROM_CARD = "post-stop: from its launch card"
# busctl arguments that drop a machine's registration, then its name (systemd.unregister)
UNREGISTER = ("call", "org.freedesktop.machine1", "/org/freedesktop/machine1",
              "org.freedesktop.machine1.Manager", "UnregisterMachine", "s")  # fmt: skip


# -- writing, after a start through the normal path --------------------------------------------
def remember(config: Config, r: Render, facts: HostFacts) -> None:
    """Write the card of a container whose unit was just started through the normal path (or
    remove one that no longer applies). Best effort: without a card a start is only slower."""
    from cove import proc, quickstart, systemd
    from cove.config import imperative_dir
    from cove.plan import settings_of
    from cove.recipes import recipe_of
    from cove.runtimedir import RuntimeDir

    c = r.container
    unit = systemd.unit_path(facts, c.name)
    systemctl, machinectl = proc.find_program("systemctl"), proc.find_program("machinectl")
    busctl = proc.find_program("busctl")
    try:
        if (
            not config.stamp
            or c.source != config.path  # an imperative container: its own file decides
            or not quickstart.eligible(r)
            or recipe_of(c.image, c.packages, facts.host.mirrors) is not None
            or systemctl is None
            or machinectl is None
            or busctl is None
        ):
            quickstart.forget(config.path, c.name)
            return
        imperative = imperative_dir(config.host)
        layout = r.layout
        card = {
            "key": (
                config.stamp,
                quickstart.code_stamp(),
                file_stamp(os.stat(r.argv[0])),
                quickstart.dir_stamp(imperative),
            ),
            "imperative": imperative,
            "config": config.path,
            "name": c.name,
            "auto_backend": config.host.backend.value == "auto",
            "argv": [r.argv[0]],
            "unit": str(unit),
            "unit_name": systemd.unit_name(c.name),
            "unit_stamp": file_stamp(os.stat(unit)),
            "wants": str(unit.parent / "machines.target.wants" / unit.name),
            "auto_start": c.auto_start,
            "systemctl": systemctl,
            "machinectl": machinectl,
            "busctl": busctl,
            "exist": [
                *r.required_paths,
                *((c.image, os.path.join(c.image, "usr")) if c.directory_image else ()),
            ],
            "runtime": str(RuntimeDir(config.host, c.name).path),
            "started": settings_of(r),
            "root": layout.root,
            "upper": layout.upper,
            "work": layout.work,
            "scratch": layout.scratch,
            "host_base": layout.host_base,
            "host_key": os.readlink(layout.host_base) if layout.host_base else None,
            "base": layout.base,
        }
        quickstart.write_card(config, c.name, card)
    except (OSError, ValueError):
        quickstart.forget(config.path, c.name)


# -- reading -----------------------------------------------------------------------------------
def _usable(card: dict[str, Any]) -> bool:
    """The installed unit is the one the card was made with, and what it needs is there."""
    try:
        if file_stamp(os.stat(card["unit"])) != card["unit_stamp"]:
            return False
    except OSError:
        return False
    return os.path.islink(card["wants"]) == card["auto_start"] and all(
        os.path.exists(p) for p in card["exist"]
    )


def run(verb: str, card: dict[str, Any]) -> int | None:
    """`verb` (one of quickstart.CARD_VERBS) through the card: the exit code, or None to take
    the normal path."""
    steps = {"start": start, "stop": stop, "__hook pre-start": pre_start,
             "__hook post-stop": post_stop}  # fmt: skip
    return steps[verb](card)


def _unit_state(card: dict[str, Any]) -> str | None:
    """The unit's ActiveState, or None when the card does not hold (then the normal path
    runs): the unit changed, something it needs is gone, systemctl is not where it was."""
    if not _usable(card):
        return None
    try:
        _, state, _ = _run([card["systemctl"], "show", "--property=ActiveState", "--value",
                            card["unit_name"]])  # fmt: skip
    except OSError:
        return None
    return state.strip()


def start(card: dict[str, Any]) -> int | None:
    """`cove start NAME`: systemctl start of its unit, as systemd.start() would after finding
    the unit installed and up to date. None: take the normal path."""
    state = _unit_state(card)
    if state is None:
        return None
    systemctl, unit, name = card["systemctl"], card["unit_name"], card["name"]
    if state == "active":
        print(f"{name}: already running (leader PID {_leader(card)})")
        return 0
    if state not in ("inactive", "failed"):
        return None  # starting or stopping: the normal path waits and says so
    _run([systemctl, "reset-failed", unit])
    code, _, said = _run([systemctl, "start", unit])
    if code != 0:
        from cove.cli import report_error
        from cove.systemd import failed_start

        return report_error(failed_start(name, said))
    print(f"{name}: started (leader PID {_leader(card)})")
    return 0


def stop(card: dict[str, Any]) -> int | None:
    """`cove stop NAME`: systemctl stop of its unit, as systemd.stop() would."""
    state = _unit_state(card)
    if state not in ("active", "inactive", "failed"):
        return None  # no card, or starting or stopping: the normal path
    systemctl, unit, name = card["systemctl"], card["unit_name"], card["name"]
    if state == "active":
        code, _, said = _run([systemctl, "stop", unit])
        if code != 0:
            from cove.cli import report_error
            from cove.errors import CoveError

            return report_error(CoveError(f"systemctl stop {unit} failed: {said.strip()}"))
    _run([systemctl, "reset-failed", unit])
    print(f"{name}: {'stopped' if state == 'active' else 'not running'}")
    return 0


def post_stop(card: dict[str, Any]) -> int | None:
    """The unit's post-stop hook, as systemd.post_stop() does it for a container without a
    network or shifted users: nspawn's leftovers, the runtime dir, machined's registration."""
    runtime = card["runtime"]
    if any(os.path.lexists(os.path.join(runtime, f)) for f in ("net.json", "uid-range")):
        return None  # made by a start this card does not describe
    import contextlib
    from pathlib import Path

    from cove.trees import remove_tree

    with contextlib.suppress(OSError):  # nspawn's, left after a kill; rmdir: if empty only
        os.rmdir(os.path.join(NSPAWN_PROPAGATE_DIR, card["name"]))
    remove_tree(Path(runtime))
    # A killed nspawn never unregistered its machine; no-op when it did (systemd.unregister).
    _run([card["busctl"], *UNREGISTER, card["name"]])
    print(STOPPED_FROM_CARD, flush=True)
    return 0


def pre_start(card: dict[str, Any]) -> int | None:
    """The unit's pre-start hook: the root's directories, and a record of the settings it
    starts with (RuntimeDir.started_file). None: take the normal path."""
    if not all(os.path.exists(p) for p in card["exist"]) or not host_base_current(card):
        return None
    make_root_dirs(card)
    import json

    runtime = card["runtime"]
    os.makedirs(runtime, mode=0o700, exist_ok=True)
    path = os.path.join(runtime, STARTED_FILE)
    tmp = os.path.join(runtime, f".{STARTED_FILE}.tmp")  # as RuntimeDir.write_started writes it
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(json.dumps(card["started"], sort_keys=True))
    os.replace(tmp, path)
    print(FROM_CARD, flush=True)
    return 0


def _leader(card: dict[str, Any]) -> str:
    try:
        _, out, _ = _run([card["machinectl"], "show", card["name"], "--property=Leader",
                          "--value"])  # fmt: skip
    except OSError:
        return "None"
    return out.strip() if out.strip().isdigit() else "None"


def _run(argv: list[str]) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of a short command, without importing subprocess (and with
    it signal and enum). Its outputs are a few lines: read one after the other."""
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    try:
        pid = os.posix_spawn(
            argv[0],
            argv,
            os.environ,
            file_actions=[
                (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                (os.POSIX_SPAWN_DUP2, out_w, 1),
                (os.POSIX_SPAWN_DUP2, err_w, 2),
            ],
        )
    finally:
        os.close(out_w)
        os.close(err_w)
    with os.fdopen(out_r, "rb") as out, os.fdopen(err_r, "rb") as err:
        stdout, stderr = out.read(), err.read()
    _, status = os.waitpid(pid, 0)
    return (
        os.waitstatus_to_exitcode(status),
        stdout.decode(errors="replace"),
        stderr.decode(errors="replace"),
    )
