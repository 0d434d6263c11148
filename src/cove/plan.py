"""`cove plan`: the containers a file declares, against what was last applied and what runs
now, give the actions that bring the host to the file (DESIGN §3). Pure: the caller reads the
records and observes the host; applying the plan is `apply`'s job, and planning again after
it yields nothing.

Actions, in the order they are carried out: removals first (they free addresses, ports and
names), then changes, then new containers.

- `stop` + `remove`: no longer declared (by this file); its data is kept, or removed too
  (`prune`) when asked. Imperative containers are never removed by a plan.
- `restart KEYS`: running, and keys changed that only a new start applies
  (`restart-if-changed = false` turns this into an `update` that leaves it running).
- `update KEYS`: changes applied without a restart: in place for a running container (the
  keys of IN_PLACE), on disk for a stopped one (its unit, its record).
- `create`: declared, never applied (and, when it already runs, what a running container
  needs besides).
- `start`: an `auto-start` container that is not running.

A running container is compared with what it was started with (every start records that in
its runtime dir, `cove start` outside any apply too), a stopped one with the record of the
last apply.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from cove.model import Container
from cove.render import Render
from cove.settings import CONTAINER_SETTINGS

# Keys a running container takes without a restart: `files` are written into its root, the
# others change only what happens at the next boot of the host or the next change.
IN_PLACE = frozenset({"files", "auto-start", "restart-if-changed"})
# Not a key: what cove itself makes of the keys (a new cove may render them differently).
RENDERING = "(rendering)"
# Not a key either: a running container whose start recorded nothing to compare with.
UNKNOWN = "(unknown)"
RECORD_VERSION = 1
ORDER = ("stop", "remove", "prune", "restart", "update", "create", "start")


@dataclass(frozen=True)
class Record:
    """What `apply` last did for one container (state-dir/applied/NAME.json)."""

    name: str
    source: str
    settings: Mapping[str, Any]
    imperative: bool = False
    # Removed by a plan, its data kept: what a later `apply --prune` may still remove.
    removed: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "version": RECORD_VERSION,
            "name": self.name,
            "source": self.source,
            "imperative": self.imperative,
            "removed": self.removed,
            "settings": dict(self.settings),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Record | None:
        if data.get("version") != RECORD_VERSION or not isinstance(data.get("settings"), dict):
            return None
        return cls(
            name=str(data["name"]),
            source=str(data["source"]),
            settings=data["settings"],
            imperative=bool(data.get("imperative", False)),
            removed=bool(data.get("removed", False)),
        )


@dataclass(frozen=True)
class Action:
    name: str
    verb: str
    reason: str
    keys: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "action": self.verb, "reason": self.reason,
                "keys": list(self.keys)}  # fmt: skip


@dataclass(frozen=True)
class Plan:
    actions: tuple[Action, ...] = ()
    notes: tuple[tuple[str, str], ...] = field(default=())  # (name, why nothing is done)

    def for_container(self, name: str) -> list[Action]:
        return [a for a in self.actions if a.name == name]


def _plain(value: Any) -> Any:
    """A setting's value as JSON data, the same for equal values."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    return value


def settings_of(r: Render) -> dict[str, Any]:
    """Every key of the container as plain data, and a digest of what cove renders of it."""
    c = r.container
    settings = {s.key: _plain(getattr(c, s.field)) for s in CONTAINER_SETTINGS}
    rendered = json.dumps([r.argv, r.unit, r.net, list(r.layout.lower)], sort_keys=True)
    settings[RENDERING] = hashlib.sha256(rendered.encode()).hexdigest()[:16]
    return settings


def changed_keys(old: Mapping[str, Any], new: Mapping[str, Any]) -> tuple[str, ...]:
    """The keys whose values differ; the rendering counts only when no key does."""
    keys = tuple(k for k in new if k != RENDERING and old.get(k) != new[k])
    if not keys and old.get(RENDERING) != new.get(RENDERING):
        return (RENDERING,)
    return keys


def make_plan(
    desired: Mapping[str, Render],
    records: Mapping[str, Record],
    running: Iterable[str],
    source: str,
    prune: bool = False,
    started: Mapping[str, Mapping[str, Any]] | None = None,
) -> Plan:
    """The actions for the containers of `source` (the file planned), given the renders of
    what it declares (imperative containers included), the records of earlier applies, the
    names of the containers that run now and, where known, the settings each was started
    with."""
    up = set(running)
    actions: list[Action] = []
    notes: list[tuple[str, str]] = []
    for name in sorted(set(records) | up):
        if name in desired:
            continue
        record = records.get(name)
        if record is not None and (record.imperative or record.source != source):
            continue  # never removed by a plan / another file's
        if record is not None and record.removed and name not in up:
            if prune:  # removed by an earlier apply that kept its data
                actions.append(Action(name, "prune", "--prune: the data an earlier apply kept"))
            continue
        if name in up:
            actions.append(Action(name, "stop", "no longer declared"))
        kept = "" if prune else "; its data is kept"
        actions.append(Action(name, "remove", f"no longer declared: its unit and runtime go{kept}"))
        if prune:
            actions.append(Action(name, "prune", "--prune: its data goes too"))
    for name in sorted(desired):
        record = records.get(name)
        if record is not None and record.removed:
            record = None  # declared again: made anew over the data it kept
        runs_with = (started or {}).get(name) if name in up else None
        actions += _container_actions(desired[name].container, desired[name], record,
                                      name in up, runs_with, notes)  # fmt: skip
    actions.sort(key=lambda a: ORDER.index(a.verb))
    return Plan(tuple(actions), tuple(notes))


def _container_actions(
    c: Container,
    r: Render,
    record: Record | None,
    running: bool,
    runs_with: Mapping[str, Any] | None,
    notes: list[tuple[str, str]],
) -> list[Action]:
    name = c.name
    desired = settings_of(r)
    actions: list[Action] = []
    if record is None:
        actions.append(Action(name, "create", "declared, not applied yet"))
    on_disk = changed_keys(record.settings, desired) if record is not None else ()
    if running:
        if runs_with is not None:
            live = changed_keys(runs_with, desired)
        elif record is not None:
            live = on_disk
        else:  # started by something that did not say with what
            live = (UNKNOWN,)
        actions += _running_actions(c, live, on_disk, record is None, notes)
    elif on_disk:
        actions.append(Action(name, "update", "on disk (not running)", on_disk))
    if c.auto_start and not running:
        actions.append(Action(name, "start", "auto-start" + (", not running" if record else "")))
    if not actions and not any(n == name for n, _ in notes):
        notes.append((name, "up to date" + (", running" if running else "")))
    return actions


def _running_actions(
    c: Container,
    live: tuple[str, ...],
    on_disk: tuple[str, ...],
    new: bool,
    notes: list[tuple[str, str]],
) -> list[Action]:
    """What a running container needs: `live` are the keys it runs with that differ from the
    file, `on_disk` those of the last apply's record (none for a `new` one)."""
    name = c.name
    if not live:
        if on_disk:
            return [Action(name, "update", "on disk: it already runs with them", on_disk)]
        return []
    if set(live) <= IN_PLACE:
        return [Action(name, "update", "in place, without a restart", live)]
    if c.restart_if_changed:
        why = "changed while running" if not new else "runs with other settings than the file"
        return [Action(name, "restart", why, live)]
    if on_disk or new:
        return [Action(name, "update", "on disk only: restart-if-changed = false "
                       "keeps it running with its old settings", on_disk or live)]  # fmt: skip
    notes.append((name, f"runs with its old {', '.join(live)} until restarted "
                  "(restart-if-changed = false)"))  # fmt: skip
    return []
