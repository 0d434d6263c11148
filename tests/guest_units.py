"""Units the tests put into booted guests through `files`."""

from __future__ import annotations

# Reaches the host address (10.83.0.1:9999) while the guest boots, before multi-user.target.
NETCHECK = """[Unit]
Description=reach the host during boot
Before=multi-user.target
[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/bin/python3 -c "import socket; socket.create_connection(('10.83.0.1', 9999), 5)"
"""

# Never lets the guest power off: its stop never ends.
HANG = """[Unit]
Description=never lets the guest power off
[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/bin/true
ExecStop=/bin/sleep infinity
TimeoutStopSec=infinity
"""


def as_toml(text: str) -> str:
    """A unit's text as the inside of a TOML basic string."""
    return text.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def wanted(unit: str) -> str:
    """A multi-user.target drop-in that wants `unit` (`files` makes no symlinks), for TOML."""
    return as_toml(f"[Unit]\nWants={unit}.service\n")
