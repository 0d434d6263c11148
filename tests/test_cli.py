"""The command line: the one-verb parser gives the same result as the full one, and usage errors
are still said with the full parser's words."""

from __future__ import annotations

import subprocess
import sys

import pytest

from cove.cli import _chosen_verb, build_parser, parse_args

SAME_EITHER_WAY = [
    ["start", "a", "b"],
    ["--config", "/x.toml", "status", "a", "--json"],
    ["--config=/x.toml", "--debug", "list"],
    ["--config", "start", "stop", "a"],  # a config file named "start"
    ["stop", "--config", "/y.toml", "a"],
    ["run", "a", "--", "sh", "-c", "exit 3"],
    ["image", "build", "debian:bookworm", "--package", "nginx"],
    ["image", "list", "--json"],
    ["options", "--markdown"],
    ["show-ip", "a", "--json"],
]


@pytest.mark.parametrize("argv", SAME_EITHER_WAY, ids=" ".join)
def test_one_verb_parser_agrees_with_the_full_one(argv: list[str]) -> None:
    assert vars(parse_args(argv)) == vars(build_parser().parse_args(argv))


def test_the_verb_is_found_past_global_options() -> None:
    assert _chosen_verb(["--config", "start", "stop", "a"]) == "stop"
    assert _chosen_verb(["--debug", "list"]) == "list"
    assert _chosen_verb(["--help"]) is None
    assert _chosen_verb(["start", "-h"]) is None
    assert _chosen_verb([]) is None


def cove(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cove", *args], capture_output=True, text=True, check=False
    )


def test_an_unknown_verb_lists_every_verb_one_may_type_and_the_nearest() -> None:
    result = cove("stauts", "a")
    assert result.returncode == 2
    assert "cove: error: unknown verb 'stauts'; did you mean 'status'?" in result.stderr
    listed = result.stderr.split("verbs: ", 1)[1].split(" (", 1)[0].split(", ")
    for verb in ("start", "stop", "status", "list", "image", "options"):
        assert verb in listed
    assert not [v for v in listed if v.startswith("_")]  # internal verbs stay hidden


def test_an_unknown_verb_far_from_any_gets_no_guess() -> None:
    result = cove("zzzz")
    assert result.returncode == 2
    assert "unknown verb 'zzzz'\n" in result.stderr
    assert "did you mean" not in result.stderr


def test_a_missing_argument_names_the_verb() -> None:
    result = cove("status")
    assert result.returncode == 2
    assert "cove status: error: the following arguments are required: NAME" in result.stderr
    assert "Traceback" not in result.stderr


def test_help_lists_every_verb_and_hides_internal_ones() -> None:
    result = cove("--help")
    assert result.returncode == 0
    for verb in ("render", "start", "restart", "root-login", "show-ip", "image", "options"):
        assert verb in result.stdout
    assert "__exec" not in result.stdout
    verb_help = cove("start", "--help")
    assert verb_help.returncode == 0
    assert "usage: cove start" in verb_help.stdout


def test_options_prints_one_form_at_a_time() -> None:
    result = cove("options", "--json", "--markdown")
    assert result.returncode == 2
    assert "argument --markdown: not allowed with argument --json" in result.stderr
    assert result.stdout == ""
