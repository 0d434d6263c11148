"""`cove apply`: carry out a plan (see plan.py) on this host, one action after another.

A container's record (state-dir/applied/NAME.json) is written once all its actions succeeded,
so a run cut short anywhere (killed, a failed action) is finished by the next one: planning
again repeats what did not happen and nothing that did. Independent containers go on when one
fails. Two applies never run at once: the second waits for the first (or fails at once).
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cove.errors import CoveError
from cove.model import Config, Container, HostConfig
from cove.plan import Action, Plan, Record, settings_of
from cove.render import HostFacts, Render
from cove.runtimedir import RuntimeDir, write_atomic

# For tests of a cut-short apply: COVE_TEST_FAULT=VERB kills cove right after the first
# action of that verb (its record not yet written), as a crash or a SIGKILL would.
FAULT_VARIABLE = "COVE_TEST_FAULT"


def records_dir(host: HostConfig) -> Path:
    return Path(host.state_dir, "applied")


def read_records(host: HostConfig) -> dict[str, Record]:
    records = {}
    try:
        entries = sorted(records_dir(host).glob("*.json"))
    except OSError:
        return {}
    for path in entries:
        try:
            record = Record.from_json(json.loads(path.read_text()))
        except (OSError, ValueError, KeyError, AttributeError):
            record = None
        if record is not None and path.stem == record.name:
            records[record.name] = record
    return records


def write_record(host: HostConfig, record: Record) -> None:
    directory = records_dir(host)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    text = json.dumps(record.to_json(), indent=1, sort_keys=True) + "\n"
    write_atomic(directory / f"{record.name}.json", text)


def forget_record(host: HostConfig, name: str) -> None:
    (records_dir(host) / f"{name}.json").unlink(missing_ok=True)


@contextmanager
def apply_lock(host: HostConfig, wait: bool) -> Iterator[None]:
    """One apply at a time per state dir; the second says who it waits for."""
    directory = Path(host.state_dir)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(directory / "apply.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            if not wait:
                raise CoveError(
                    f"another cove apply (pid {holder}) is running on {host.state_dir}",
                    hint="wait for it, or run without --no-wait to queue behind it",
                ) from None
            print(f"cove: waiting for another cove apply (pid {holder})...", file=sys.stderr)
            fcntl.flock(fd, fcntl.LOCK_EX)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)


def planned(
    config: Config, backend: Any, facts: HostFacts, prune: bool = False
) -> tuple[Plan, dict[str, Render]]:
    """The plan for a file on this host, and the renders it was made from."""
    from cove.plan import make_plan
    from cove.render import render

    renders = {name: render(c, facts) for name, c in config.containers.items()}
    running = backend.running_names(facts)
    started = {}
    for name in running:
        settings = RuntimeDir(config.host, name).read_started()
        if settings is not None:
            started[name] = settings
    plan = make_plan(renders, read_records(config.host), running, config.path, prune, started)
    return plan, renders


def apply_file(
    config: Config,
    backend: Any,
    facts: HostFacts,
    announce: Callable[[Plan], Callable[[str], None]],
    prune: bool = False,
    wait: bool = True,
    only: str | None = None,
) -> tuple[Plan, list[Outcome]]:
    """Under the apply lock: plan (for one container with `only`), bring the hosts file in
    step, carry the plan out; `announce(plan)` gives what reports each action done."""
    from dataclasses import replace

    from cove import hostsfile

    with apply_lock(config.host, wait=wait):
        plan, renders = planned(config, backend, facts, prune)
        if only is not None:
            plan = replace(plan, actions=tuple(a for a in plan.actions if a.name == only))
        hostsfile.sync(config.host.hosts_file, config)
        if not plan.actions:
            return plan, []
        return plan, Applier(config, renders, backend, facts, announce(plan)).apply(plan)


@dataclass
class Outcome:
    action: Action
    error: str | None = None


class Applier:
    """Carries out one plan with one backend (the modules `direct` and `systemd`)."""

    def __init__(
        self,
        config: Config,
        renders: dict[str, Render],
        backend: Any,
        facts: HostFacts,
        say: Callable[[str], None],
    ) -> None:
        self.config = config
        self.renders = renders
        self.backend = backend
        self.facts = facts
        self.say = say

    def apply(self, plan: Plan) -> list[Outcome]:
        outcomes: list[Outcome] = []
        failed: set[str] = set()
        for action in plan.actions:
            if action.name in failed:
                outcomes.append(Outcome(action, "skipped: an earlier action failed"))
                continue
            try:
                self._do(action)
            except (CoveError, OSError) as e:
                why = e.message if isinstance(e, CoveError) else f"{e.strerror or e}"
                failed.add(action.name)
                outcomes.append(Outcome(action, why))
                print(f"{action.name}: {action.verb} failed: {why}", file=sys.stderr)
                continue
            outcomes.append(Outcome(action))
            self.say(_done(action))
            if os.environ.get(FAULT_VARIABLE) == action.verb:
                os.kill(os.getpid(), signal.SIGKILL)
            if self._last_of(plan, action):
                self._record(action.name, action)
        return outcomes

    @staticmethod
    def _last_of(plan: Plan, action: Action) -> bool:
        return plan.for_container(action.name)[-1] is action

    def _record(self, name: str, last: Action) -> None:
        host = self.config.host
        r = self.renders.get(name)
        if r is None:
            if last.verb == "remove" and os.path.lexists(host.container_state(name)):
                # Its data kept: `apply --prune` may still take it.
                write_record(host, Record(name, self.config.path, {}, removed=True))
            else:
                forget_record(host, name)
            return
        imperative = r.container.source != self.config.path
        write_record(host, Record(name, r.container.source, settings_of(r), imperative))

    def _container(self, name: str) -> Container:
        r = self.renders.get(name)
        return r.container if r else Container(name=name, source=self.config.path)

    def _do(self, action: Action) -> None:
        b, facts, name = self.backend, self.facts, action.name
        if action.verb == "stop":
            b.stop(facts, self._container(name))
        elif action.verb == "remove":
            from cove import quickstart

            b.forget(facts, name)
            quickstart.forget(self.config.path, name)
        elif action.verb == "prune":
            b.destroy(facts, self._container(name))
        elif action.verb == "restart":
            r = self.renders[name]
            b.check_start(r)
            b.stop(facts, r.container)
            b.start(r, facts)
        elif action.verb == "start":
            b.start(self.renders[name], facts)
        elif action.verb in ("create", "update"):
            self._install(action)

    def _install(self, action: Action) -> None:
        """Bring the container's unit (systemd) up to date, and write changed `files` into it
        when it runs."""
        r = self.renders[action.name]
        if hasattr(self.backend, "install"):
            self.backend.install(r, self.facts)
        if "files" in action.keys and action.reason.startswith("in place"):
            from cove import guestfiles

            observed = self.backend.observe(self.facts, action.name)
            if observed.leader is None:
                raise CoveError(f"{action.name}: no leader process to write its files into")
            guestfiles.write_into(r.container.files, f"/proc/{observed.leader}/root")
            self.backend.files_changed(self.facts, r)
        if action.reason.startswith("in place"):
            # Only keys a running container takes as they are changed: it runs with the file.
            RuntimeDir(self.config.host, action.name).write_started(settings_of(r))


def _done(action: Action) -> str:
    keys = ", ".join(action.keys)
    keys = f" {keys}" if keys.startswith("(") else f" ({keys})" if keys else ""
    past = {"stop": "stopped", "remove": "removed", "prune": "data removed",
            "restart": "restarted", "update": "updated", "create": "created",
            "start": "started"}[action.verb]  # fmt: skip
    return f"{action.name}: {past}{keys}"
