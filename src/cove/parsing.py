"""The building blocks of cove's settings tables: diagnostics, the shared value parsers, and
one row per key (`Setting`) that drives parsing, defaults and documentation (DESIGN §3).

Parsers are pure: they take the raw TOML value and its key path, report problems to a
`Diagnostics` and return the parsed value, or `INVALID`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from cove.errors import Diagnostic
from cove.timespan import format_timespan


class _Invalid:
    def __repr__(self) -> str:
        return "INVALID"


INVALID: Final = _Invalid()

_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def key_path(*parts: str) -> str:
    """`containers."my data".x`: TOML spelling of a key path, quoting keys that need it."""
    return ".".join(p if _BARE_KEY.match(p) else '"' + p.replace('"', '\\"') + '"' for p in parts)


class Diagnostics:
    def __init__(self, file: str) -> None:
        self.file = file
        self.items: list[Diagnostic] = []

    def error(self, path: str, message: str) -> _Invalid:
        self.items.append(Diagnostic(self.file, path, message))
        return INVALID


def describe(value: object) -> str:
    names = {
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "a list",
        dict: "a table",
    }
    kind = names.get(type(value), type(value).__name__)
    if isinstance(value, (bool, int, float, str)):
        return f"{kind} ({value!r})"
    return kind


def parse_bool(value: object, path: str, diag: Diagnostics) -> bool | _Invalid:
    if isinstance(value, bool):
        return value
    return diag.error(path, f"expected true or false, got {describe(value)}")


def parse_text(value: object, path: str, diag: Diagnostics) -> str | _Invalid:
    """A string that can be carried as one argument or unit-file word: no control characters."""
    if not isinstance(value, str):
        return diag.error(path, f"expected a string, got {describe(value)}")
    if _CONTROL.search(value):
        return diag.error(
            path, "control characters (newline, NUL, …) cannot be carried to systemd-nspawn"
        )
    return value


def parse_abs_path(value: object, path: str, diag: Diagnostics) -> str | _Invalid:
    text = parse_text(value, path, diag)
    if isinstance(text, _Invalid):
        return text
    if not text.startswith("/"):
        return diag.error(path, f"expected an absolute path, got {text!r}")
    if "/../" in text + "/" or text.endswith("/.."):
        return diag.error(path, f"'..' is not allowed in a path, got {text!r}")
    return text


def parse_text_list(value: object, path: str, diag: Diagnostics) -> tuple[str, ...] | _Invalid:
    if not isinstance(value, list):
        return diag.error(path, f"expected a list of strings, got {describe(value)}")
    items = [parse_text(v, f"{path}[{i}]", diag) for i, v in enumerate(value)]
    if any(isinstance(i, _Invalid) for i in items):
        return INVALID
    return tuple(str(i) for i in items)


Parser = Callable[[object, str, Diagnostics], Any]


@dataclass(frozen=True)
class Setting:
    key: str
    field: str
    type: str
    default: object
    parse: Parser
    doc: str
    nixos: str | None = None

    @property
    def default_text(self) -> str:
        """The default as a user would write it in cove.toml."""
        value = self.default
        if value is None:
            return "unset"
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, float):
            return f'"{format_timespan(value)}"'
        if isinstance(value, str):
            return f'"{value}"'
        if value == ():
            return "{}" if self.type.startswith("table") else "[]"
        return repr(value)


def parse_table(
    table: dict[str, Any], settings: tuple[Setting, ...], path: str, diag: Diagnostics
) -> dict[str, Any] | None:
    """The fields of one table by its settings, or None after reporting its problems."""
    by_key = {s.key: s for s in settings}
    for unknown in sorted(set(table) - set(by_key)):
        hint = _near(unknown, by_key)
        diag.error(
            f"{path}.{key_path(unknown)}",
            "unknown key" + (f"; did you mean {hint!r}?" if hint else ""),
        )
    values: dict[str, Any] = {}
    ok = True
    for key, raw in table.items():
        setting = by_key.get(key)
        if setting is None:
            ok = False
            continue
        value = setting.parse(raw, f"{path}.{key}", diag)
        if value is INVALID:
            ok = False
        else:
            values[setting.field] = value
    return values if ok else None


def _near(key: str, known: dict[str, Setting]) -> str | None:
    import difflib

    match = difflib.get_close_matches(key.replace("_", "-").lower(), list(known), n=1)
    return match[0] if match else None
