"""systemd time spans ("90", "1min 30s", "500ms") to seconds and back."""

from __future__ import annotations

import re

_UNITS = {
    "us": 1e-6, "usec": 1e-6,
    "ms": 1e-3, "msec": 1e-3,
    "s": 1.0, "sec": 1.0, "second": 1.0, "seconds": 1.0,
    "m": 60.0, "min": 60.0, "minute": 60.0, "minutes": 60.0,
    "h": 3600.0, "hr": 3600.0, "hour": 3600.0, "hours": 3600.0,
    "d": 86400.0, "day": 86400.0, "days": 86400.0,
    "w": 604800.0, "week": 604800.0, "weeks": 604800.0,
}  # fmt: skip
_TERM = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([a-z]*)")


def parse_timespan(text: str) -> float | None:
    """Seconds for a systemd time span, or None when `text` is not one."""
    text = text.strip()
    if not text:
        return None
    total, pos = 0.0, 0
    while pos < len(text):
        match = _TERM.match(text, pos)
        if match is None or match.end() == pos:
            return None
        number, unit = match.groups()
        if unit and unit not in _UNITS:
            return None
        total += float(number) * _UNITS[unit or "s"]
        pos = match.end()
    return total


def format_timespan(seconds: float) -> str:
    """The shortest exact systemd spelling: whole seconds as "90s", else milliseconds."""
    if float(seconds).is_integer():
        return f"{int(seconds)}s"
    return f"{round(seconds * 1000)}ms"
