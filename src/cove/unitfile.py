"""Escaping for systemd unit files: every value is carried as exactly one word.

Callers have already rejected control characters (settings.parse_text), so each value fits on
one line; here we only quote and neutralise systemd's specifiers and variable expansion.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _check(value: str) -> None:
    if _CONTROL.search(value):
        raise ValueError(f"control character in unit value {value!r}")


def quote_word(value: str) -> str:
    """One ExecStart= argument: quoted, with `%` and `$` made literal."""
    _check(value)
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%").replace("$", "$$")
    return f'"{escaped}"'


def quote_setting(value: str) -> str:
    """A quoted word for settings that expand specifiers but not variables."""
    _check(value)
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%") + '"'


def plain(value: str) -> str:
    """A free-text value (Description=): specifiers made literal."""
    _check(value)
    return value.replace("%", "%%")


def exec_line(argv: Sequence[str]) -> str:
    return " ".join(quote_word(a) for a in argv)


Section = tuple[str, Sequence[tuple[str, str]]]


def render_unit(header: Iterable[str], sections: Iterable[Section]) -> str:
    lines = [f"# {h}" for h in header]
    for name, entries in sections:
        if lines:
            lines.append("")
        lines.append(f"[{name}]")
        lines.extend(f"{key}={value}" for key, value in entries)
    return "\n".join(lines) + "\n"
