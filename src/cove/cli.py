"""Command line: verbs, exit codes, error text + hint. The only place that turns exceptions into
exit codes; heavy modules are imported inside the verbs that need them."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, NoReturn

from cove import __version__
from cove.errors import (
    EXIT_FAILED,
    EXIT_RUN_FAILED,
    ConfigError,
    CoveError,
    NotFound,
    NotRunning,
    UsageError,
)

if TYPE_CHECKING:
    from cove.converge import Outcome
    from cove.model import Config, Container
    from cove.plan import Plan
    from cove.render import HostFacts, Render

JSON_VERSION = 1


class Context:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self._config: Config | None = None
        self._facts: HostFacts | None = None

    @property
    def config(self) -> Config:
        if self._config is None:
            from cove.config import config_path, load_config

            self._config = load_config(config_path(self.args.config, os.environ))
        return self._config

    def container(self, name: str) -> Container:
        try:
            return self.config.containers[name]
        except KeyError:
            raise NotFound(
                f"no container {name!r} in {self.config.path}",
                hint="`cove list` shows the declared containers",
            ) from None

    def reload(self) -> None:
        """Read the files again at the next use (after a verb changed them)."""
        self._config = None

    def container_or_leftover(self, name: str) -> Container:
        """A declared container, or one the file no longer declares that left something (it
        runs, or has a unit or data): enough of it to stop it and clean up after it."""
        if name in self.config.containers:
            return self.config.containers[name]
        from cove.config import name_problem
        from cove.model import Container

        host = self.config.host
        left = name_problem(name) is None and any(
            os.path.lexists(path)
            for path in (
                os.path.join(host.runtime_dir, name),
                os.path.join(host.unit_dir, f"cove@{name}.service"),
                str(host.container_state(name)),
                str(host.container_log(name)),
                os.path.join(host.state_dir, "applied", f"{name}.json"),
            )
        )
        if not left:
            return self.container(name)  # says it is not declared
        return Container(name=name, source=self.config.path)

    def facts(self) -> HostFacts:
        if self._facts is None:
            from cove.host import probe

            self._facts = probe(self.config.host)
        return self._facts

    def render(self, name: str) -> Render:
        from cove.render import render

        return render(self.container(name), self.facts())

    def backend(self) -> tuple[Any, HostFacts]:
        """The runtime of this host's backend (the modules `direct` and `systemd` offer the
        same functions), and the host's facts."""
        from cove.model import Backend

        facts = self.facts()
        if facts.backend is Backend.SYSTEMD:
            from cove import systemd

            return systemd, facts
        from cove import direct

        return direct, facts


def _print_json(data: dict[str, Any]) -> None:
    print(json.dumps({"version": JSON_VERSION, **data}, indent=2, sort_keys=True))


# -- verbs -----------------------------------------------------------------------------------
def cmd_render(ctx: Context) -> int:
    from cove.render import render_text

    names = ctx.args.names or sorted(ctx.config.containers)
    for i, name in enumerate(names):
        if i:
            print()
        sys.stdout.write(render_text(ctx.render(name)))
    return 0


def sync_names(ctx: Context) -> None:
    """NAME.containers resolves on the host for every container the file declares."""
    from cove import hostsfile

    hostsfile.sync(ctx.config.host.hosts_file, ctx.config)


def cmd_autostart(ctx: Context) -> int:
    """Start every `auto-start` container: for the host's boot scripts on the direct backend;
    on systemd it also installs and enables their units, so that the next boots do it."""
    ctx.args.names = sorted(n for n, c in ctx.config.containers.items() if c.auto_start)
    if not ctx.args.names:
        print(f"no auto-start containers in {ctx.config.path}", file=sys.stderr)
        return 0
    return cmd_start(ctx)


def cmd_start(ctx: Context) -> int:
    runtime, facts = ctx.backend()
    sync_names(ctx)
    renders = [ctx.render(n) for n in ctx.args.names]
    for r in renders:
        started, leader = runtime.start(r, facts)
        name = r.container.name
        if started:
            if facts.backend.value == "direct":
                from cove import quickstart
                from cove.supervisor import log_path

                quickstart.remember(ctx.config, r, facts, str(log_path(facts, name)))
            else:
                from cove import quickunit

                quickunit.remember(ctx.config, r, facts)
            print(f"{name}: started (leader PID {leader})")
        else:
            print(f"{name}: already running (leader PID {leader})")
    return 0


def _stop(ctx: Context, terminate: bool) -> int:
    runtime, facts = ctx.backend()
    sync_names(ctx)
    for name in ctx.args.names:
        stopped = runtime.stop(facts, ctx.container_or_leftover(name), terminate=terminate)
        if name not in ctx.config.containers:
            runtime.forget(facts, name)  # its data stays, until `cove destroy`
        done = "terminated" if terminate else "stopped"
        print(f"{name}: {done if stopped else 'not running'}")
    return 0


def _print_plan(ctx: Context, plan: Plan) -> None:
    if ctx.args.json:
        _print_json({"config": ctx.config.path, "actions": [a.to_json() for a in plan.actions],
                     "up-to-date": [name for name, _ in plan.notes]})  # fmt: skip
        return
    if not plan.actions and not plan.notes:
        print(f"nothing declared in {ctx.config.path}, nothing to remove")
        return
    rows = [(a.name, a.verb, ", ".join(a.keys) or "-", a.reason) for a in plan.actions]
    rows += [(name, "-", "-", note) for name, note in plan.notes]
    _print_table(("NAME", "ACTION", "KEYS", "REASON"), rows)


def _counted(plan: Plan) -> Callable[[str], None]:
    """Each action's line; on a terminal with "[3/20]" before it, so a long apply shows
    how far it is (plain lines, no escape codes: they stay readable when scrolled back)."""
    if not sys.stdout.isatty():
        return print
    done = [0]

    def say(line: str) -> None:
        done[0] += 1
        print(f"[{done[0]}/{len(plan.actions)}] {line}", flush=True)

    return say


def _silent(plan: Plan) -> Callable[[str], None]:
    return lambda line: None


def _done_of(outcome: Outcome | None) -> bool:
    return outcome is not None and outcome.error is None


def _error_of(outcome: Outcome | None) -> str | None:
    return None if outcome is None else outcome.error


def cmd_plan(ctx: Context) -> int:
    from cove.converge import planned

    runtime, facts = ctx.backend()
    plan, _ = planned(ctx.config, runtime, facts, ctx.args.prune)
    _print_plan(ctx, plan)
    return 0


def cmd_apply(ctx: Context) -> int:
    from cove.converge import apply_file

    if ctx.args.dry_run:
        return cmd_plan(ctx)
    runtime, facts = ctx.backend()
    announce = _silent if ctx.args.json else _counted
    plan, outcomes = apply_file(ctx.config, runtime, facts, announce, prune=ctx.args.prune,
                                wait=not ctx.args.no_wait)  # fmt: skip
    if ctx.args.json:
        carried = {id(o.action): o for o in outcomes}
        _print_json({"config": ctx.config.path, "up-to-date": [name for name, _ in plan.notes],
                     "actions": [{**a.to_json(), "done": _done_of(carried.get(id(a))),
                                  "error": _error_of(carried.get(id(a)))}
                                 for a in plan.actions]})  # fmt: skip
    elif not plan.actions:
        print("nothing to do: the host is as the file says")
        return 0
    failed = [o for o in outcomes if o.error]
    if failed:
        print(f"cove: {len(failed)} of {len(outcomes)} actions failed", file=sys.stderr)
        return EXIT_FAILED
    return 0


def cmd_stop(ctx: Context) -> int:
    return _stop(ctx, terminate=False)


def cmd_terminate(ctx: Context) -> int:
    return _stop(ctx, terminate=True)


def cmd_restart(ctx: Context) -> int:
    runtime, facts = ctx.backend()
    sync_names(ctx)
    for name in ctx.args.names:
        r = ctx.render(name)
        runtime.check_start(r)
        runtime.stop(facts, r.container)
        _, leader = runtime.start(r, facts)
        print(f"{name}: restarted (leader PID {leader})")
    return 0


def _describe(ctx: Context, name: str) -> dict[str, Any]:
    import time

    from cove.netnames import host_link

    c = ctx.container(name)
    runtime, facts = ctx.backend()
    observed = runtime.observe(facts, name)
    started = observed.status.get("started_at")
    up = observed.state == "up" and isinstance(started, (int, float))
    return {
        "name": name,
        "declared": True,
        "kind": "declared" if c.source == ctx.config.path else "imperative",
        "source": c.source,
        "state": observed.state,
        "leader": observed.leader,
        "unit": observed.status.get("unit"),
        "unit-state": observed.status.get("unit-state"),
        "image": c.image,
        "boot": c.boot,
        "root": "ephemeral" if c.ephemeral else "persistent",
        "host-link": host_link(c.name, bool(c.host_bridge)) if c.network.wants_veth else None,
        "addresses": {
            key: getattr(c, key.replace("-", "_"))
            for key in ("host-address", "local-address", "host-address6", "local-address6")
            if getattr(c, key.replace("-", "_"))
        },
        "uptime": round(time.time() - started, 3) if up and started else None,
        "uid-range": _uid_range(observed.leader) if up and observed.leader else None,
    }


def _uid_range(leader: int) -> dict[str, int] | None:
    """The host UIDs the guest's IDs map to, read from its init: None without a user
    namespace (one mapping of all 2^32 IDs)."""
    try:
        with open(f"/proc/{leader}/uid_map") as f:
            fields = f.readline().split()
    except OSError:
        return None
    if len(fields) != 3 or not all(x.isdigit() for x in fields) or int(fields[2]) == 2**32 - 1:
        return None
    return {"first": int(fields[1]), "count": int(fields[2])}


def _orphans(ctx: Context) -> list[dict[str, Any]]:
    """Containers nothing declares any more that left something here: data, a record of an
    apply, a runtime dir (running or not)."""
    from pathlib import Path

    from cove.config import name_problem

    host = ctx.config.host
    found: set[str] = set()
    for directory in (Path(host.state_dir, "containers"), Path(host.runtime_dir)):
        with contextlib.suppress(OSError):
            found.update(p.name for p in directory.iterdir() if p.is_dir())
    with contextlib.suppress(OSError):
        found.update(p.stem for p in Path(host.state_dir, "applied").glob("*.json"))
    names = sorted(n for n in found - set(ctx.config.containers) if name_problem(n) is None)
    if not names:
        return []
    runtime, facts = ctx.backend()
    return [{"name": n, "declared": False, "kind": "orphaned",
             "state": runtime.observe(facts, n).state} for n in names]  # fmt: skip


def cmd_status(ctx: Context) -> int:
    name = ctx.args.name
    if name not in ctx.config.containers:
        from cove.config import name_problem

        runtime, facts = ctx.backend()
        # Not declared: gone, unless it still runs (a file that dropped it).
        state = runtime.observe(facts, name).state if name_problem(name) is None else "down"
        if state == "down":
            if ctx.args.json:
                _print_json({"name": name, "state": "gone"})
            else:
                print("gone")
            return 3
        if ctx.args.json:
            _print_json({"name": name, "state": state, "declared": False})
        else:
            print(state)
            print(f"cove: {name} is not declared in {ctx.config.path} but still "
                  f"{state}; `cove stop {name}` stops it", file=sys.stderr)  # fmt: skip
        return 0
    info = _describe(ctx, name)
    if ctx.args.json:
        _print_json(info)
    else:
        print(info["state"])
        if info["state"] == "orphaned":
            print(
                f"cove: {name}'s supervisor died; `cove stop {name}` cleans it up", file=sys.stderr
            )
    return 0


def cmd_list(ctx: Context) -> int:
    rows = [_describe(ctx, name) for name in sorted(ctx.config.containers)]
    orphans = _orphans(ctx)
    if ctx.args.json:
        _print_json({"containers": rows + orphans})
        return 0
    if not rows and not orphans:
        print(f"no containers declared in {ctx.config.path}", file=sys.stderr)
        return 0
    table = [
        (r["name"], r["state"], r["kind"], r["root"], "yes" if r["boot"] else "no", r["image"])
        for r in rows
    ]
    table += [(r["name"], r["state"], r["kind"], "-", "-", "-") for r in orphans]
    _print_table(("NAME", "STATE", "KIND", "ROOT", "BOOT", "IMAGE"), table)
    return 0


def _print_table(header: tuple[str, ...], rows: Sequence[tuple[str, ...]]) -> None:
    """Columns padded to their widest cell; the last one, free text, is not padded."""
    table = [header, *rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(header) - 1)]
    for row in table:
        print("".join(cell.ljust(w + 2) for cell, w in zip(row, widths, strict=False)) + row[-1])


def _guest_env(c: Container, extra: dict[str, str]) -> dict[str, str]:
    from cove.proc import DEFAULT_PATH

    env = {"PATH": DEFAULT_PATH, "HOME": "/root", "container": "cove"}
    term = os.environ.get("TERM")
    if term:
        env["TERM"] = term
    env.update(c.environment)
    env.update(extra)
    return env


def cmd_run(ctx: Context) -> int:
    command = list(ctx.args.command)
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        raise UsageError("cove run NAME -- COMMAND [ARG…]: no command given")
    if os.geteuid() != 0:
        raise NotRunning("cove run enters the container's namespaces as root: run it as root",
                         hint="sudo cove run NAME -- COMMAND")  # fmt: skip
    c = ctx.container(ctx.args.name)
    runtime, facts = ctx.backend()
    runtime.exec_in(facts, c.name, command, _guest_env(c, {}))
    return EXIT_FAILED  # not reached: exec_in replaces this process


def cmd_login(ctx: Context) -> int:
    """A login prompt of the guest (its own accounts and passwords) on this terminal."""
    if not os.isatty(0):
        raise UsageError("cove login needs a terminal", hint="cove run NAME -- CMD without one")
    c = ctx.container(ctx.args.name)
    runtime, facts = ctx.backend()
    runtime.login(facts, c.name)
    return EXIT_FAILED  # not reached: login replaces this process


def cmd_root_login(ctx: Context) -> int:
    if os.geteuid() != 0:
        raise NotRunning("root-login gives a root shell in the container: run it as root",
                         hint="sudo cove root-login NAME")  # fmt: skip
    c = ctx.container(ctx.args.name)
    runtime, facts = ctx.backend()
    observed = runtime.require_up(facts, c.name)
    assert observed.leader is not None
    shell = runtime.root_shell(observed.leader)
    env = _guest_env(c, {"USER": "root", "LOGNAME": "root", "SHELL": shell})
    runtime.exec_in(facts, c.name, [shell, "-l"], env)
    return EXIT_FAILED


def cmd_show_ip(ctx: Context) -> int:
    """The container's address as other programs want it: v4, else v6, without a prefix."""
    c = ctx.container(ctx.args.name)
    address = c.local_address or c.local_address6
    if ctx.args.json:
        _print_json(
            {
                "name": c.name,
                "ipv4": c.local_address.split("/")[0] if c.local_address else None,
                "ipv6": c.local_address6.split("/")[0] if c.local_address6 else None,
            }
        )
        return 0 if address else 3
    if not address:
        raise NotFound(
            f"{c.name} has no address",
            hint=f"set local-address or local-address6 in containers.{c.name}",
        )
    print(address.split("/")[0])
    return 0


def cmd_image_build(ctx: Context) -> int:
    from cove import images
    from cove.recipes import MIRRORS, PACKAGE, RECIPE, recipe_of

    host = ctx.config.host
    bad = [p for p in ctx.args.package if not PACKAGE.match(p)]
    if bad:
        raise UsageError(f"--package: expected a package name such as nginx, got {bad[0]!r}")
    for what in ctx.args.images:
        recipe = recipe_of(what, tuple(ctx.args.package), host.mirrors)
        if recipe is None and RECIPE.match(what):
            raise UsageError(
                f"{what}: cove builds {', '.join(f'{d}:SUITE' for d in MIRRORS)} only",
                hint="a root directory or archive is used as an image as it is",
            )
        if recipe is None and not what.startswith("/"):
            c = ctx.container(what)
            recipe = recipe_of(c.image, c.packages, host.mirrors)
            if recipe is None and not c.archive_image:
                raise UsageError(
                    f"{what}'s image {c.image!r} is neither a recipe nor an archive: "
                    "nothing to build"
                )
            what = c.image
        if recipe is not None:
            print(f"{recipe.label}: {images.ensure_recipe(host, recipe)}")
        else:
            print(f"{what}: {images.ensure_archive(host, what)}")
    return 0


def _image_users(ctx: Context, prune: bool = False) -> dict[str, list[str]]:
    """Real path of an image -> the containers that use it: declared ones, persistent ones
    created from it (declared or not), and running ones (declared or not)."""
    from cove import images
    from cove.render import root_layout

    host = ctx.config.host
    declared: dict[str, list[str]] = {}
    for c in ctx.config.containers.values():
        image = images.image_of(host, c, make=False)
        lower = [str(image)] if image else root_layout(c, host).lower
        for path in lower[1:] if c.host_image else lower:  # not the container's own layer
            declared.setdefault(os.path.realpath(path), []).append(c.name)
    return images.merge_users(
        declared,
        images.recorded_users(host),
        images.running_users(host),
        images.claimed_users(host, prune),
    )


def cmd_image_list(ctx: Context) -> int:
    from cove import images

    found = images.listing(ctx.config.host, _image_users(ctx))
    if ctx.args.json:
        _print_json(
            {
                "images": [
                    {
                        "identity": i.identity,
                        "label": i.label,
                        "path": str(i.path),
                        "size": i.size,
                        "used-by": list(i.used_by),
                    }
                    for i in found
                ]
            }
        )
        return 0
    _print_table(
        ("IDENTITY", "SIZE", "USED BY", "LABEL"),
        [
            (i.identity, f"{i.size / 2**20:.0f}M", ",".join(i.used_by) or "-", i.label)
            for i in found
        ],
    )
    return 0


def cmd_image_rm(ctx: Context) -> int:
    from cove import images

    users = _image_users(ctx)
    host = ctx.config.host
    for identity in ctx.args.identities:
        images.check_identity(identity)
        using = users.get(os.path.realpath(images.store(host) / identity), [])
        if using:
            raise CoveError(
                f"image {identity} is used by {', '.join(using)}",
                hint="`cove image list` shows who uses what; `cove destroy NAME` or "
                "`cove image rebase NAME` frees it",
            )
        images.remove(host, identity)
        print(f"{identity}: removed")
    return 0


def cmd_image_gc(ctx: Context) -> int:
    from cove import images

    removed = images.collect_garbage(ctx.config.host, _image_users(ctx, prune=True))
    for identity in removed:
        print(f"{identity}: removed")
    if not removed:
        print("no unused images", file=sys.stderr)
    return 0


def cmd_image_rebase(ctx: Context) -> int:
    """Move a stopped persistent container to the image its file now names."""
    from cove import images

    c = ctx.container(ctx.args.name)
    host = ctx.config.host
    runtime, facts = ctx.backend()
    if runtime.observe(facts, c.name).state != "down":
        raise CoveError(f"{c.name} is running", hint=f"stop it first: cove stop {c.name}")
    image = None if c.ephemeral else images.image_of(host, c, make=True)
    if image is None:
        raise CoveError(
            f"{c.name} starts from its file's image every time; there is nothing to rebase"
        )
    wanted = image.name
    kept = images.recorded(host, c.name)
    images.record(host, c.name, wanted)
    if kept == wanted:
        print(f"{c.name}: already on image {wanted}")
    elif kept is None:
        print(f"{c.name}: will start from image {wanted}")
    else:
        print(f"{c.name}: image {kept} -> {wanted}; its changes are kept on top")
    return 0


def cmd_logs(ctx: Context) -> int:
    if ctx.args.lines is not None and ctx.args.lines < 0:
        raise UsageError(f"-n: expected a number of lines, got {ctx.args.lines}")
    c = ctx.container(ctx.args.name)
    runtime, facts = ctx.backend()
    code: int = runtime.logs(facts, c.name, ctx.args.lines, ctx.args.follow)
    return code


def cmd_destroy(ctx: Context) -> int:
    from cove import imperative, quickstart
    from cove.converge import forget_record

    config = ctx.config
    for name in ctx.args.names:
        c = config.containers.get(name)
        if c is not None and c.source == config.path:
            raise CoveError(
                f"cannot destroy {name}: it is declared in {config.path}",
                hint=f"remove [containers.{name}] from that file, then `cove apply --prune` "
                "stops it and removes its data",
            )
    runtime, facts = ctx.backend()
    missing = []
    for name in ctx.args.names:
        quickstart.forget(config.path, name)
        try:
            c = ctx.container_or_leftover(name)
        except NotFound as e:  # the others are still destroyed
            report_error(e)
            missing.append(name)
            continue
        removed = runtime.destroy(facts, c)
        if name in config.containers:  # imperative: its file goes too
            imperative.remove(config, name)
            removed.append(c.source)
        forget_record(config.host, name)
        print(f"{name}: destroyed" if removed else f"{name}: nothing to destroy")
    ctx.reload()
    sync_names(ctx)
    return NotFound.exit_code if missing else 0


def cmd_create(ctx: Context) -> int:
    from cove import imperative

    a = ctx.args
    request = imperative.Request(
        name=a.name, image=a.image, host_address=a.host_address, local_address=a.local_address,
        bridge=a.bridge, ports=tuple(a.port), auto_start=a.auto_start,
        unique=a.ensure_unique_name,
    )  # fmt: skip
    before = ctx.config
    name = imperative.write(before, request)
    try:
        ctx.reload()
        ctx.config  # noqa: B018 - checks the new file against everything else declared
    except CoveError:
        imperative.remove(before, name)
        raise
    code = _apply_one(ctx, name, say=lambda line: print(line, file=sys.stderr))
    print(name)  # alone on stdout: `name=$(cove create web --ensure-unique-name)`
    return code


def cmd_update(ctx: Context) -> int:
    ctx.container(ctx.args.name)  # declared somewhere, or not found
    return _apply_one(ctx, ctx.args.name)


def _apply_one(ctx: Context, name: str, say: Callable[[str], None] = print) -> int:
    """Plan and apply for one container only (create, update)."""
    from cove.converge import apply_file

    runtime, facts = ctx.backend()
    plan, outcomes = apply_file(ctx.config, runtime, facts, lambda _: say, only=name)
    if not plan.actions:
        say(f"{name}: up to date")
    return EXIT_FAILED if any(o.error for o in outcomes) else 0


def cmd_doctor(ctx: Context) -> int:
    from cove.doctor import Doctor

    runtime, facts = ctx.backend()
    doctor = Doctor(ctx.config, runtime, facts)
    found = doctor.find()
    if ctx.args.fix and found:
        for leftover, error in doctor.fix(found):
            state = "removed" if error is None else f"left ({error})"
            print(f"{leftover.kind}: {leftover.what}: {state}")
        found = doctor.find()
    if ctx.args.json:
        _print_json({"leftovers": [leftover.to_json() for leftover in found]})
    elif not found:
        print("nothing left behind")
    else:
        for leftover in found:
            named = leftover.name and leftover.name not in leftover.what.split()
            of = f" (of {leftover.name})" if named else ""
            print(f"{leftover.kind}: {leftover.what}{of}")
        if not ctx.args.fix:
            print("hint: `cove doctor --fix` removes them", file=sys.stderr)
    return EXIT_FAILED if found else 0


def cmd_import_nixos(ctx: Context) -> int:
    from pathlib import Path

    from cove import nixos
    from cove.config import parse_config

    path = ctx.args.file
    try:
        with open(path, "rb") as f:
            document = json.load(f)
        converted = nixos.convert(document)
    except OSError as e:
        raise UsageError(f"{path}: cannot read: {e.strerror}") from None
    except ValueError as e:
        raise UsageError(f"{path}: {e}", hint="give the output of `nix eval --json "
                         ".#nixosConfigurations.HOST.config.containers`") from None  # fmt: skip
    text = nixos.to_toml(converted, path)
    try:
        parse_config(text.encode(), "<converted>")  # what it writes must read back
    except ConfigError as e:
        # Nothing is written: the problem is in the input, under the same container names.
        raise UsageError(
            f"{path}: cannot be carried over as it is:\n{e.message}",
            hint=f"fix or rename those containers in {path} (a cove name is letters, digits and "
            "'-', at most 64 characters), then import again",
        ) from None
    if ctx.args.output:
        from cove.runtimedir import write_atomic

        try:
            write_atomic(Path(ctx.args.output), text, mode=0o644)
        except OSError as e:
            raise UsageError(f"{ctx.args.output}: cannot write: {e.strerror}") from None
    else:
        sys.stdout.write(text)
    notes = sum(len(n) for n in converted.notes.values())
    count = len(converted.containers)
    print(f"cove: {count} container{'' if count == 1 else 's'} converted, "
          f"{notes} note{'' if notes == 1 else 's'} (as comments)", file=sys.stderr)  # fmt: skip
    return 0


def cmd_completion(ctx: Context) -> int:
    from cove.completion import SHELLS

    sys.stdout.write(SHELLS[ctx.args.shell]())
    return 0


def cmd_man(ctx: Context) -> int:
    from cove.manpage import PAGES

    sys.stdout.write(PAGES[ctx.args.section][1]())
    return 0


def cmd_names(ctx: Context) -> int:
    """Declared container names, one per line (for shell completion)."""
    for name in sorted(ctx.config.containers):
        print(name)
    return 0


def cmd_options(ctx: Context) -> int:
    from cove.settings import CONTAINER_SETTINGS, HOST_SETTINGS

    if ctx.args.markdown:
        from cove.docs import options_markdown

        sys.stdout.write(options_markdown())
        return 0
    if ctx.args.json:
        _print_json(
            {
                "options": [
                    {
                        "key": s.key,
                        "type": s.type,
                        "default": s.default_text,
                        "description": s.doc,
                        "nixos": s.nixos,
                    }
                    for s in CONTAINER_SETTINGS
                ],
                "host-options": [
                    {"key": s.key, "type": s.type, "default": s.default_text, "description": s.doc}
                    for s in HOST_SETTINGS
                ],
            }  # fmt: skip
        )
        return 0
    for s in CONTAINER_SETTINGS:
        print(f"{s.key} ({s.type}, default {s.default_text})\n    {s.doc}")
    print("\n[host] keys:")
    for s in HOST_SETTINGS:
        print(f"{s.key} ({s.type}, default {s.default_text})\n    {s.doc}")
    return 0


def cmd_exec(ctx: Context) -> int:
    """Internal: the systemd unit's ExecStart: assemble the root, then exec nspawn."""
    from cove import rootfs
    from cove.render import RootLayout

    a = ctx.args
    layout = RootLayout(
        a.root,
        tuple(a.lower),
        a.upper,
        a.work,
        a.scratch,
        a.scratch_size,
        a.host_usr,
        files_dir=a.files,
        private_users=a.private_users,
        name=a.name,
    )
    argv = list(a.argv[1:] if a.argv[:1] == ["--"] else a.argv)
    argv = rootfs.with_users_range(argv, rootfs.assemble(layout))
    os.execv(argv[0], argv)
    return EXIT_FAILED


def cmd_hook(ctx: Context) -> int:
    """Internal: the systemd unit's pre-start and post-stop steps."""
    from cove import systemd

    if ctx.args.step == "pre-start":
        systemd.pre_start(ctx.render(ctx.args.name), ctx.facts())
    else:
        systemd.post_stop(ctx.container_or_leftover(ctx.args.name), ctx.facts())
    return 0


# -- parser ----------------------------------------------------------------------------------
Verb = Callable[[Context], int]


class _Formatter(argparse.HelpFormatter):
    """argparse's own formatter imports shutil (and with it bz2 and lzma) on every argument
    added, only to learn the terminal width: about 7 ms of every command's start-up."""

    def __init__(self, prog: str) -> None:
        try:
            width = os.get_terminal_size(sys.stderr.fileno()).columns
        except OSError:
            width = 80
        super().__init__(prog, width=max(width, 40) - 2)


class _Parser(argparse.ArgumentParser):
    """The whole command line. An unknown verb is answered with the verbs one may type (the
    internal ones left out) and the nearest of them."""

    public_verbs: list[str]

    def error(self, message: str) -> NoReturn:
        typed = _unknown_verb(message)
        if typed is not None:
            import difflib

            near = difflib.get_close_matches(typed, self.public_verbs, n=1)
            guess = f"; did you mean '{near[0]}'?" if near else ""
            message = (
                f"unknown verb '{typed}'{guess}\n"
                f"verbs: {', '.join(self.public_verbs)} (cove VERB --help tells more)"
            )
        super().error(message)


def _unknown_verb(message: str) -> str | None:
    """The word argparse refused as the verb, from its message; None for other errors."""
    prefix = "argument VERB: invalid choice: "
    if not message.startswith(prefix):
        return None
    rest = message[len(prefix) :]
    quote = rest[:1]
    end = rest.find(quote, 1) if quote in ("'", '"') else -1
    return rest[1:end] if end > 0 else None


class _Retry(Exception):
    """A usage error met by the one-verb parser: parse again with every verb, to say it."""


class _OneVerbParser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise _Retry(message)


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The whole command line; with `only`, just that verb's sub-parser, since building all of
    them is most of the cost of parsing (the caller falls back to all of them for help and
    errors)."""
    parser_class: type[argparse.ArgumentParser] = _Parser if only is None else _OneVerbParser
    parser = parser_class(
        prog="cove",
        description="Declarative system containers on systemd-nspawn.",
        formatter_class=_Formatter,
    )
    public: list[str] = []
    if isinstance(parser, _Parser):
        parser.public_verbs = public
    parser.add_argument("--version", action="version", version=f"cove {__version__}")
    # Global options work before or after the verb; SUPPRESS keeps a sub-parser's absent
    # option from overwriting the value given before the verb.
    common = argparse.ArgumentParser(add_help=False, formatter_class=_Formatter)
    for p_ in (parser, common):
        default = None if p_ is parser else argparse.SUPPRESS
        p_.add_argument(
            "--config",
            metavar="FILE",
            default=default,
            help="config file (default: $COVE_CONFIG, else /etc/cove/cove.toml)",
        )
        p_.add_argument(
            "--debug",
            action="store_true",
            default=False if p_ is parser else argparse.SUPPRESS,
            help="print every command cove runs, as a line one can paste",
        )
    # Stands in for the sub-parsers left out with `only`; what is added to it is never used.
    unused = argparse.ArgumentParser(
        add_help=False, conflict_handler="resolve", formatter_class=_Formatter
    )
    verbs = parser.add_subparsers(dest="verb", metavar="VERB", required=True)

    def verb(name: str, func: Verb | None, help: str | None, **kw: Any) -> argparse.ArgumentParser:
        if help is not None:  # internal verbs (no help) stay out of `cove --help`
            kw["help"] = help
            public.append(name)
        if only is not None and name != only:
            return unused
        sub = verbs.add_parser(
            name, description=help, parents=[common], formatter_class=_Formatter, **kw
        )
        if func is not None:
            sub.set_defaults(func=func)
        return sub

    def json_flag(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--json", action="store_true", help="print JSON")

    p = verb("render", cmd_render, "print the unit file and nspawn argv, touching nothing")
    p.add_argument("names", nargs="*", metavar="NAME", help="containers (default: all)")
    for name, func, text in (
        ("start", cmd_start, "start containers and wait until they are ready"),
        ("stop", cmd_stop, "stop containers cleanly (killed after timeout-stop-sec)"),
        ("restart", cmd_restart, "stop, then start containers"),
        ("terminate", cmd_terminate, "kill containers at once"),
        ("destroy", cmd_destroy, "stop containers and remove their state and logs"),
    ):
        verb(name, func, text).add_argument("names", nargs="+", metavar="NAME",
                                            help="container names")  # fmt: skip
    p = verb("create", cmd_create, "create an imperative container (config-dir/containers/)")
    p.add_argument("name", metavar="NAME", help="a container name")
    p.add_argument("--image", help='its image (default "host")')
    p.add_argument("--host-address", metavar="ADDRESS", help="the host side's address")
    p.add_argument("--local-address", metavar="ADDRESS", help="the container's address")
    p.add_argument("--bridge", metavar="BRIDGE", help="put its veth on this host bridge")
    p.add_argument("--port", action="append", default=[], metavar="[PROTO:]HOST[:CONTAINER]",
                   help="forward a host port (repeatable)")  # fmt: skip
    p.add_argument("--auto-start", action="store_true", help="start it now and at boot")
    p.add_argument("--ensure-unique-name", action="store_true",
                   help="if NAME is taken, use NAME-0, NAME-1, ... (printed)")  # fmt: skip
    p = verb("update", cmd_update, "apply the file's current settings to one container")
    p.add_argument("name", metavar="NAME", help="a container name")
    p = verb("plan", cmd_plan, "show what apply would do to make the host as the file says")
    p.add_argument("--prune", action="store_true", help="plan to remove dropped containers' data")
    json_flag(p)
    p = verb("apply", cmd_apply, "make the host as the file says: create, start, restart, "
             "update and remove containers")  # fmt: skip
    p.add_argument("--prune", action="store_true", help="also remove dropped containers' data")
    p.add_argument("--dry-run", action="store_true", help="only print the plan")
    p.add_argument("--no-wait", action="store_true", help="fail if another apply runs")
    json_flag(p)
    verb("autostart", cmd_autostart, "start every auto-start container (for boot scripts)")
    p = verb("status", cmd_status, "print up, down, starting, stopping, failed, orphaned or gone")
    p.add_argument("name", metavar="NAME", help="a container name")
    json_flag(p)
    json_flag(verb("list", cmd_list, "list declared containers and their state"))
    p = verb(
        "run",
        cmd_run,
        "run a command in a running container",
        usage="cove run NAME -- COMMAND [ARG...]",
    )
    p.add_argument("name", metavar="NAME", help="a container name")
    p.add_argument("command", nargs=argparse.REMAINDER, metavar="COMMAND",
                   help="the command and its arguments, after --")  # fmt: skip
    p = verb("logs", cmd_logs, "print a container's console log (kept after it stopped)")
    p.add_argument("name", metavar="NAME", help="a container name")
    p.add_argument("-n", "--lines", type=int, metavar="N", help="only the last N lines")
    p.add_argument("-f", "--follow", action="store_true", help="then print what follows")
    p = verb("login", cmd_login, "log in to a running container (its accounts, a terminal)")
    p.add_argument("name", metavar="NAME", help="a container name")
    p = verb("root-login", cmd_root_login, "open a root shell in a running container")
    p.add_argument("name", metavar="NAME", help="a container name")
    p = verb("show-ip", cmd_show_ip, "print the container's address (IPv4, else IPv6)")
    p.add_argument("name", metavar="NAME", help="a container name")
    json_flag(p)
    image = verb("image", None, "build and manage images")
    if image is not unused:
        image_verbs = image.add_subparsers(dest="image_verb", metavar="IMAGE-VERB", required=True)
        p = image_verbs.add_parser(
            "build",
            help="build recipe images (debian:SUITE, ubuntu:SUITE, or a container's)",
            parents=[common],
            formatter_class=_Formatter,
        )
        p.set_defaults(func=cmd_image_build)
        p.add_argument("images", nargs="+", metavar="RECIPE|NAME")
        p.add_argument(
            "--package", action="append", default=[], help="with a RECIPE: add a package"
        )
        p = image_verbs.add_parser(
            "list",
            help="list the images in the store",
            parents=[common],
            formatter_class=_Formatter,
        )
        p.set_defaults(func=cmd_image_list)
        json_flag(p)
        for name, func, text, metavar in (
            ("rm", cmd_image_rm, "remove images no container uses", "IDENTITY"),
            ("gc", cmd_image_gc, "remove every image no container uses", None),
            ("rebase", cmd_image_rebase, "move a stopped persistent container to the image "
             "its file names now", "NAME"),
        ):  # fmt: skip
            p = image_verbs.add_parser(
                name, help=text, parents=[common], formatter_class=_Formatter
            )
            p.set_defaults(func=func)
            if name == "rm":
                p.add_argument("identities", nargs="+", metavar=metavar)
            elif metavar:
                p.add_argument("name", metavar=metavar)
    p = verb("doctor", cmd_doctor, "list what cove left that no running container owns")
    p.add_argument("--fix", action="store_true", help="remove it (never what is not cove's)")
    json_flag(p)
    p = verb("import-nixos", cmd_import_nixos, "convert a NixOS host's containers (JSON from "
             "nix eval) into a cove.toml")  # fmt: skip
    p.add_argument("file", metavar="FILE.json")
    p.add_argument("-o", "--output", metavar="FILE", help="write it there (default: stdout)")
    p = verb("completion", cmd_completion, "print shell completion for bash, zsh or fish")
    p.add_argument("shell", choices=["bash", "zsh", "fish"])
    p = verb("man", cmd_man, "print the manual page cove(1) or cove.toml(5), in roff")
    p.add_argument("section", choices=["1", "5"])
    verb("__names", cmd_names, None)
    p = verb("options", cmd_options, "list every container and [host] key with type and default")
    form = p.add_mutually_exclusive_group()
    form.add_argument("--json", action="store_true", help="print JSON")
    form.add_argument("--markdown", action="store_true", help="print the reference page")
    p = verb("__exec", cmd_exec, None)
    for flag in ("--root", "--upper", "--work", "--scratch", "--scratch-size", "--files", "--name"):
        p.add_argument(flag)
    p.add_argument("--private-users", default="no")
    p.add_argument("--lower", action="append", default=[])
    p.add_argument("--host-usr", action="store_true")
    p.add_argument("argv", nargs=argparse.REMAINDER)
    p = verb("__hook", cmd_hook, None)
    p.add_argument("step", choices=["pre-start", "post-stop"])
    p.add_argument("name")
    return parser


def _chosen_verb(argv: Sequence[str]) -> str | None:
    """The verb of a command line that needs no help text, else None."""
    words = iter(argv)
    for word in words:
        if word in ("-h", "--help", "--version"):
            return None
        if word == "--config":
            next(words, None)
        elif not word.startswith("-"):
            rest = list(words)
            return None if "-h" in rest or "--help" in rest else word
    return None


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    verb = _chosen_verb(argv)
    if verb is not None:
        with contextlib.suppress(_Retry):
            return build_parser(only=verb).parse_args(argv)
    return build_parser().parse_args(argv)


def report_error(e: CoveError) -> int:
    """One line of what went wrong, one of what to do; the exit code."""
    print(f"cove: {e.message}", file=sys.stderr)
    if e.hint:
        print(f"hint: {e.hint}", file=sys.stderr)
    return e.exit_code


class Terminated(BaseException):
    """SIGTERM, raised so that what is half made (a build, a start) is undone on the way out."""


def _terminated(signum: int, frame: object) -> None:
    raise Terminated


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    signal.signal(signal.SIGTERM, _terminated)
    if args.debug:
        from cove import proc

        proc.DEBUG = True
    ctx = Context(args)
    try:
        code: int = args.func(ctx)
        return code
    except CoveError as e:
        code = report_error(e)
        # `run` keeps 0-124 and 126-127 for the command's own exit codes (DESIGN §8).
        return EXIT_RUN_FAILED if args.verb == "run" else code
    except KeyboardInterrupt:
        return 130
    except Terminated:
        return 143
    except BrokenPipeError:
        # The reader went away (`cove render | head`): stop quietly, as cat does.
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
