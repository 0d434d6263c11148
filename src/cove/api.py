"""cove as a Python library: the operations of the command line, typed.

    from cove import api

    host = api.load("/etc/cove/cove.toml")
    for action in api.plan(host).actions:
        print(action.name, action.verb, action.keys, action.reason)
    api.apply(host)
    print(api.status(host, "web").state)

Errors are `cove.errors.CoveError` (with `.message`, `.hint` and the `.exit_code` the command
line would use); a config error is a `ConfigError` listing every problem. The functions act
on the host for real, as the verbs do: run them as root.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cove.converge import Outcome
from cove.errors import ConfigError, CoveError, NotFound
from cove.model import Config, Container
from cove.plan import Action, Plan
from cove.render import HostFacts, Render

__all__ = [
    "Action",
    "Config",
    "ConfigError",
    "Container",
    "CoveError",
    "Host",
    "NotFound",
    "Outcome",
    "Plan",
    "Render",
    "Status",
    "apply",
    "load",
    "plan",
    "render",
    "start",
    "status",
    "stop",
]


@dataclass(frozen=True)
class Host:
    """A config file read, with the facts of this host and its backend."""

    config: Config
    facts: HostFacts
    backend: Any  # the module cove.direct or cove.systemd

    def container(self, name: str) -> Container:
        try:
            return self.config.containers[name]
        except KeyError:
            raise NotFound(f"no container {name!r} in {self.config.path}",
                           hint="`cove list` shows the declared containers") from None  # fmt: skip


@dataclass(frozen=True)
class Status:
    name: str
    state: str  # "up", "down", "starting", "stopping", "failed" or "orphaned"
    leader: int | None
    details: dict[str, Any]


def load(path: str | None = None) -> Host:
    """Read a config file (default: $COVE_CONFIG, else /etc/cove/cove.toml) and the imperative
    containers beside it, and probe this host."""
    from cove.config import config_path, load_config
    from cove.host import probe
    from cove.model import Backend

    config = load_config(config_path(path, os.environ))
    facts = probe(config.host)
    if facts.backend is Backend.SYSTEMD:
        from cove import systemd as backend
    else:
        from cove import direct as backend  # type: ignore[no-redef]
    return Host(config, facts, backend)


def render(host: Host, name: str) -> Render:
    """Everything cove would write or run for one container, touching nothing."""
    from cove.render import render as render_container

    return render_container(host.container(name), host.facts)


def plan(host: Host, prune: bool = False) -> Plan:
    """What `apply` would do, and why (see cove.plan)."""
    from cove.converge import planned

    return planned(host.config, host.backend, host.facts, prune)[0]


def apply(host: Host, prune: bool = False, wait: bool = True) -> list[Outcome]:
    """Make the host as the file says; one Outcome per action (`.error` is None when it
    succeeded). Another apply running at once is waited for, or (wait=False) an error."""
    from cove.converge import apply_file

    silent: Callable[[str], None] = lambda _: None  # noqa: E731 - a library prints nothing
    _, outcomes = apply_file(host.config, host.backend, host.facts, lambda _: silent,
                             prune=prune, wait=wait)  # fmt: skip
    return outcomes


def start(host: Host, name: str) -> int | None:
    """Start a container and return once it is ready: its leader PID."""
    _, leader = host.backend.start(render(host, name), host.facts)
    return leader if isinstance(leader, int) else None


def stop(host: Host, name: str, terminate: bool = False) -> bool:
    """Stop a container (cleanly, or at once with terminate); whether it was running."""
    return bool(host.backend.stop(host.facts, host.container(name), terminate=terminate))


def status(host: Host, name: str) -> Status:
    """What the host says about a declared container now (a name nothing declares raises
    NotFound, where the command line prints `gone`). `details` is the backend's own record:
    the unit and its state on systemd, the supervisor's status on direct."""
    observed = host.backend.observe(host.facts, host.container(name).name)
    return Status(name, observed.state, observed.leader, dict(observed.status))
