"""Shell completion, generated from the parser, run in real bash, zsh and fish."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from cove import completion
from cove.cli import build_parser
from tests.conftest import COVE

BIN = str(Path(sys.executable).parent)


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    config = tmp_path / "cove.toml"
    config.write_text("[containers.web]\n[containers.db]\n[containers.cache]\n")
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "COVE_CONFIG": str(config)}
    for shell in ("bash", "zsh", "fish"):
        script = subprocess.run([*COVE, "completion", shell], capture_output=True, text=True,
                                check=True).stdout  # fmt: skip
        (tmp_path / f"cove.{shell}").write_text(script)
    return tmp_path, env


def test_the_verbs_are_the_parsers() -> None:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    public = sorted(n for n in sub.choices if not n.startswith("__"))  # type: ignore[attr-defined]
    assert sorted(v.name for v in completion.verbs()) == public


def bash(setup: tuple[Path, dict[str, str]], *words: str) -> list[str]:
    tmp, env = setup
    line = " ".join(f"'{w}'" for w in words)
    script = (f"source {tmp}/cove.bash; COMP_WORDS=({line}); COMP_CWORD={len(words) - 1}; "
              "_cove; printf '%s\\n' \"${COMPREPLY[@]}\"")  # fmt: skip
    out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, env=env)
    return sorted(filter(None, out.stdout.splitlines()))


def test_bash(setup: tuple[Path, dict[str, str]]) -> None:
    assert bash(setup, "cove", "st") == ["start", "status", "stop"]
    assert bash(setup, "cove", "start", "") == ["cache", "db", "web"]
    assert bash(setup, "cove", "stop", "w") == ["web"]
    assert "--prune" in bash(setup, "cove", "apply", "--")
    assert bash(setup, "cove", "image", "r") == ["rebase", "rm"]
    assert bash(setup, "cove", "create", "") == []  # a new name: nothing to offer


def test_zsh(setup: tuple[Path, dict[str, str]]) -> None:
    tmp, env = setup
    stubs = ("compadd() { shift; print -l -- \"$@\" }; _describe() { print -l -- "
             "\"${(@)${(P)2}%%:*}\" }; _files() { print FILES }")  # fmt: skip

    def zsh(*words: str) -> list[str]:
        script = (f"{stubs}; source {tmp}/cove.zsh >/dev/null 2>&1 || true; "
                  f"words=({' '.join(words)} ''); CURRENT={len(words) + 1}; _cove")  # fmt: skip
        out = subprocess.run(["zsh", "-f", "-c", script], capture_output=True, text=True, env=env)
        return sorted(filter(None, out.stdout.splitlines()))

    assert {"start", "stop", "apply", "import-nixos"} <= set(zsh("cove"))
    assert zsh("cove", "start") == ["cache", "db", "web"]
    assert zsh("cove", "import-nixos") == ["FILES"]


def test_fish(setup: tuple[Path, dict[str, str]]) -> None:
    tmp, env = setup

    def fish(line: str) -> list[str]:
        script = f"source {tmp}/cove.fish; complete -C '{line}'"
        out = subprocess.run(["fish", "-c", script], capture_output=True, text=True, env=env)
        assert out.returncode == 0, out.stderr
        return sorted(word.split("\t")[0] for word in out.stdout.splitlines())

    assert fish("cove st") == ["start", "status", "stop"]
    assert fish("cove start ") == ["cache", "db", "web"]
    assert "--prune" in fish("cove apply --")


def other_file(tmp: Path) -> Path:
    other = tmp / "other.toml"
    other.write_text("[containers.elsewhere]\n")
    return other


def test_choices_and_sub_verbs(setup: tuple[Path, dict[str, str]]) -> None:
    assert bash(setup, "cove", "completion", "") == ["bash", "fish", "zsh"]
    assert bash(setup, "cove", "man", "") == ["1", "5"]
    assert bash(setup, "cove", "image", "rm", "") == []
    assert bash(setup, "cove", "image", "rebase", "") == ["cache", "db", "web"]
    assert bash(setup, "cove", "run", "web", "--", "") == []


def test_bash_reads_the_config_file_however_it_is_given(setup: tuple[Path, dict[str, str]]):
    tmp, _ = setup
    other = other_file(tmp)
    assert bash(setup, "cove", "--config", str(other), "start", "") == ["elsewhere"]
    # Real bash hands `--config=FILE` over in three words (COMP_WORDBREAKS has "=").
    assert bash(setup, "cove", "--config", "=", str(other), "start", "") == ["elsewhere"]
    assert bash(setup, "cove", f"--config={other}", "start", "") == ["elsewhere"]
    assert bash(setup, "cove", "start", "--config", "=", str(other), "") == ["elsewhere"]
    assert bash(setup, "cove", "--config", "=", f"{tmp}/oth") == [str(other)]
    assert bash(setup, "cove", f"--config={tmp}/oth") == [f"--config={other}"]


@pytest.mark.parametrize("form", ["--config FILE", "--config=FILE"])
def test_zsh_and_fish_read_the_config_file(setup: tuple[Path, dict[str, str]], form: str):
    tmp, env = setup
    given = form.replace("FILE", str(other_file(tmp)))
    fish = subprocess.run(["fish", "-c", f"source {tmp}/cove.fish; complete -C 'cove "
                           f"{given} start '"], capture_output=True, text=True,
                          env=env)  # fmt: skip
    assert [w.split("\t")[0] for w in fish.stdout.splitlines()] == ["elsewhere"]
    stubs = 'compadd() { shift; print -l -- "$@" }; _files() { print FILES }'
    words = f"cove {given} start ''"
    zsh = subprocess.run(["zsh", "-f", "-c", f"{stubs}; source {tmp}/cove.zsh >/dev/null 2>&1; "
                          f"words=({words}); CURRENT={len(words.split())}; _cove"],
                         capture_output=True, text=True, env=env)  # fmt: skip
    assert zsh.stdout.split() == ["elsewhere"]
