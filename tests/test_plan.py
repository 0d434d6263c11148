"""The plan, pure: declared renders + records + what runs → actions and their reasons."""

from __future__ import annotations

import pytest

from cove.config import parse_config
from cove.model import Backend
from cove.plan import RENDERING, Plan, Record, changed_keys, make_plan, settings_of
from cove.render import HostFacts, Render, render

SOURCE = "/etc/cove/cove.toml"


def renders(text: str) -> dict[str, Render]:
    config = parse_config(text.encode(), SOURCE)
    facts = HostFacts(host=config.host, backend=Backend.DIRECT, cove="/usr/bin/cove")
    return {name: render(c, facts) for name, c in config.containers.items()}


def applied(text: str, imperative: bool = False) -> dict[str, Record]:
    return {n: Record(n, SOURCE, settings_of(r), imperative) for n, r in renders(text).items()}


def rows(plan: Plan) -> list[tuple[str, str, tuple[str, ...]]]:
    return [(a.name, a.verb, a.keys) for a in plan.actions]


WEB = "[containers.web]\nephemeral = true\n"
WEB_AUTO = "[containers.web]\nephemeral = true\nauto-start = true\n"


def test_new_containers_are_created_and_auto_start_ones_started() -> None:
    desired = renders(WEB_AUTO + "[containers.db]\n")
    plan = make_plan(desired, {}, set(), SOURCE)
    assert rows(plan) == [("db", "create", ()), ("web", "create", ()), ("web", "start", ())]


def test_applying_the_same_file_again_plans_nothing() -> None:
    text = WEB_AUTO + "[containers.db]\n"
    plan = make_plan(renders(text), applied(text), {"web"}, SOURCE)
    assert plan.actions == ()
    assert plan.notes == (("db", "up to date"), ("web", "up to date, running"))


@pytest.mark.parametrize(
    ("change", "running", "expected"),
    [
        ('files = { "/etc/motd" = "hi" }', True, [("web", "update", ("files",))]),
        ('files = { "/etc/motd" = "hi" }', False, [("web", "update", ("files",))]),
        ("timeout-stop-sec = 5", True, [("web", "restart", ("timeout-stop-sec",))]),
        ("timeout-stop-sec = 5", False, [("web", "update", ("timeout-stop-sec",))]),
        ('environment = { A = "1" }\nboot = false\ncommand = ["/bin/true"]', True,
         [("web", "restart", ("boot", "command", "environment"))]),
        ("auto-start = true", True, [("web", "update", ("auto-start",))]),
        ("auto-start = true", False, [("web", "update", ("auto-start",)),
                                      ("web", "start", ())]),
    ],
)  # fmt: skip
def test_a_changed_container_is_updated_or_restarted(
    change: str, running: bool, expected: list[tuple[str, str, tuple[str, ...]]]
) -> None:
    plan = make_plan(renders(WEB + change + "\n"), applied(WEB), {"web"} if running else (), SOURCE)
    assert rows(plan) == expected


def started(text: str) -> dict[str, dict[str, object]]:
    """What containers started from `text` recorded in their runtime dirs."""
    return {n: settings_of(r) for n, r in renders(text).items()}


def test_a_container_started_outside_apply_is_compared_with_what_it_runs() -> None:
    old, new = WEB, WEB + 'environment = { A = "1" }\n'
    plan = make_plan(renders(new), {}, {"web"}, SOURCE, started=started(old))
    assert rows(plan) == [("web", "restart", ("environment",)), ("web", "create", ())]
    assert plan.actions[0].reason == "runs with other settings than the file"
    # Started from the file as it is now: recorded, not restarted.
    plan = make_plan(renders(new), {}, {"web"}, SOURCE, started=started(new))
    assert rows(plan) == [("web", "create", ())]


def test_a_container_restarted_by_hand_is_not_restarted_again() -> None:
    old, new = WEB, WEB + "timeout-stop-sec = 5\n"
    plan = make_plan(renders(new), applied(old), {"web"}, SOURCE, started=started(new))
    assert rows(plan) == [("web", "update", ("timeout-stop-sec",))]
    assert plan.actions[0].reason == "on disk: it already runs with them"
    again = make_plan(renders(new), applied(new), {"web"}, SOURCE, started=started(new))
    assert again.actions == ()


def test_a_running_container_that_recorded_nothing_is_restarted() -> None:
    plan = make_plan(renders(WEB), {}, {"web"}, SOURCE, started={})
    assert rows(plan) == [("web", "restart", ("(unknown)",)), ("web", "create", ())]
    # With a record, the record says what it runs with.
    assert make_plan(renders(WEB), applied(WEB), {"web"}, SOURCE, started={}).actions == ()


def test_files_changed_in_place_are_compared_with_what_runs() -> None:
    new = WEB + 'files = { "/etc/motd" = "hi" }\n'
    plan = make_plan(renders(new), applied(new), {"web"}, SOURCE, started=started(WEB))
    assert rows(plan) == [("web", "update", ("files",))]
    assert plan.actions[0].reason == "in place, without a restart"


def test_restart_if_changed_false_says_once_then_notes_the_old_settings() -> None:
    old = WEB + "restart-if-changed = false\n"
    new = old + "timeout-stop-sec = 5\n"
    plan = make_plan(renders(new), applied(old), {"web"}, SOURCE, started=started(old))
    assert rows(plan) == [("web", "update", ("timeout-stop-sec",))]
    plan = make_plan(renders(new), applied(new), {"web"}, SOURCE, started=started(old))
    assert plan.actions == ()
    assert plan.notes == (
        ("web", "runs with its old timeout-stop-sec until restarted (restart-if-changed = false)"),
    )


def test_forward_ports_changed_while_running_restarts_naming_the_key() -> None:
    net = 'private-network = true\nhost-address = "10.1.0.1"\nlocal-address = "10.1.0.2"\n'
    old = WEB + net + "forward-ports = [{ host-port = 8080, container-port = 80 }]\n"
    new = WEB + net + "forward-ports = [{ host-port = 8081, container-port = 80 }]\n"
    plan = make_plan(renders(new), applied(old), {"web"}, SOURCE)
    assert rows(plan) == [("web", "restart", ("forward-ports",))]
    assert plan.actions[0].reason == "changed while running"


def test_restart_if_changed_false_leaves_it_running_and_says_so() -> None:
    old = WEB + "restart-if-changed = false\n"
    plan = make_plan(renders(old + "timeout-stop-sec = 5\n"), applied(old), {"web"}, SOURCE)
    assert rows(plan) == [("web", "update", ("timeout-stop-sec",))]
    assert "restart-if-changed = false keeps it running" in plan.actions[0].reason


def test_a_dropped_container_is_stopped_and_removed_and_pruned_only_when_asked() -> None:
    before = applied(WEB + "[containers.db]\n")
    plan = make_plan(renders(WEB), before, {"db"}, SOURCE)
    assert rows(plan) == [("db", "stop", ()), ("db", "remove", ())]
    assert "its data is kept" in plan.actions[1].reason
    pruned = make_plan(renders(WEB), before, set(), SOURCE, prune=True)
    assert rows(pruned) == [("db", "remove", ()), ("db", "prune", ())]


def test_removals_come_first_then_changes_then_new_containers() -> None:
    before = applied("[containers.gone]\n[containers.kept]\n")
    desired = renders("[containers.kept]\ntimeout-stop-sec = 5\n[containers.added]\n")
    plan = make_plan(desired, before, {"gone", "kept"}, SOURCE)
    assert [a.verb for a in plan.actions] == ["stop", "remove", "restart", "create"]


def test_imperative_and_other_files_containers_are_never_removed() -> None:
    records = applied("[containers.mine]\n", imperative=True)
    records["theirs"] = Record("theirs", "/elsewhere/cove.toml", {}, False)
    assert make_plan({}, records, set(), SOURCE).actions == ()


def test_a_running_undeclared_container_without_a_record_is_stopped_and_removed() -> None:
    assert rows(make_plan({}, {}, {"stray"}, SOURCE)) == [
        ("stray", "stop", ()), ("stray", "remove", ())]  # fmt: skip


def test_fifty_containers_one_changed_touches_exactly_one() -> None:
    text = "".join(f"[containers.c{i}]\nephemeral = true\n" for i in range(50))
    changed = text.replace("[containers.c17]\n", "[containers.c17]\ntimeout-start-sec = 9\n")
    plan = make_plan(renders(changed), applied(text), set(), SOURCE)
    assert rows(plan) == [("c17", "update", ("timeout-start-sec",))]


def test_the_rendering_counts_only_when_no_key_changed() -> None:
    old = {"a": 1, RENDERING: "x"}
    assert changed_keys(old, {"a": 1, RENDERING: "y"}) == (RENDERING,)
    assert changed_keys(old, {"a": 2, RENDERING: "y"}) == ("a",)
    assert changed_keys(old, {"a": 1, RENDERING: "x"}) == ()


def test_records_round_trip_and_unknown_versions_are_ignored() -> None:
    record = applied(WEB)["web"]
    assert Record.from_json(record.to_json()) == record
    assert Record.from_json({**record.to_json(), "version": 99}) is None
