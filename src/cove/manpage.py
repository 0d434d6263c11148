"""The manual pages cove(1) and cove.toml(5), generated from the argument parser and the
settings tables (so they cannot drift from what cove accepts). `cove man 1|5` prints them;
man/ holds the copies installed with the package, which a test keeps current."""

from __future__ import annotations

from collections.abc import Iterable

from cove import __version__
from cove.parsing import Setting


def _esc(text: str) -> str:
    """Text as roff reads it: backslashes and hyphens escaped, no line starting with a dot."""
    text = text.replace("`", "").replace("\\", "\\e").replace("-", "\\-")
    return "\n".join(("\\&" + line if line.startswith((".", "'")) else line)
                     for line in text.splitlines())  # fmt: skip


def _header(name: str, section: int, title: str) -> list[str]:
    return [f'.TH {name.upper()} {section} "" "cove {__version__}" "{title}"', ".SH NAME",
            f"{_esc(name)} \\- declarative system containers on systemd\\-nspawn"]  # fmt: skip


def cove_1() -> str:
    from cove.completion import verbs

    out = _header("cove", 1, "User Commands")
    out += [".SH SYNOPSIS", ".B cove",
            "[\\fB\\-\\-config\\fR \\fIFILE\\fR] [\\fB\\-\\-debug\\fR] \\fIVERB\\fR "
            "[\\fIARGUMENTS\\fR]",
            ".SH DESCRIPTION",
            _esc("cove runs the containers a TOML file declares (see cove.toml(5)) as real "
                 "systemd-nspawn machines: as systemd units where systemd is PID 1, else under "
                 "a supervisor of its own. Global options may also follow the verb."),
            ".SH VERBS"]  # fmt: skip
    for v in verbs():
        out += [".TP", f"\\fB{_esc(v.usage)}\\fR", _esc(v.help[:1].upper() + v.help[1:] + ".")]
        for flag in v.flags:
            if flag.names[0] in ("-h", "--config", "--debug"):
                continue
            out += [".RS", ".TP", f"\\fB{_esc(', '.join(flag.names))}\\fR", _esc(flag.help),
                    ".RE"]  # fmt: skip
        for sub in v.subverbs:
            out += [".RS", ".TP", f"\\fB{_esc(sub.usage)}\\fR", _esc(sub.help), ".RE"]
    out += [".SH OPTIONS", ".TP", "\\fB\\-\\-config\\fR \\fIFILE\\fR",
            _esc("The config file (default: $COVE_CONFIG, else /etc/cove/cove.toml)."),
            ".TP", "\\fB\\-\\-debug\\fR",
            _esc("Print every command cove runs, as a line one can paste."),
            ".TP", "\\fB\\-h\\fR, \\fB\\-\\-help\\fR",
            _esc("Print the help of cove, or of a verb (cove VERB --help), and exit."),
            ".TP", "\\fB\\-\\-version\\fR", _esc("Print cove's version and exit."),
            ".SH ENVIRONMENT", ".TP", "\\fBCOVE_CONFIG\\fR",
            _esc("The config file when --config is not given."),
            ".TP", "\\fBNO_COLOR\\fR",
            _esc("When set, cove prints no escape codes (progress becomes plain lines)."),
            ".SH EXIT STATUS",
            _esc("0 success, 1 an operation failed, 2 a usage or config error, 3 not found. "
                 "cove run passes the command's own exit code through and uses 125 for its "
                 "own failures."),
            ".SH FILES",
            _esc("/etc/cove/cove.toml (the file), /etc/cove/containers/NAME.toml (imperative "
                 "containers), /var/lib/cove (state), /run/cove (runtime), /var/log/cove (logs), "
                 "/etc/systemd/system/cove@NAME.service (units), /run/cove-launch (launch cards)."),
            ".SH SEE ALSO", "cove.toml(5), systemd\\-nspawn(1), machinectl(1)"]  # fmt: skip
    return "\n".join(out) + "\n"


def _settings(settings: Iterable[Setting], prefix: str) -> list[str]:
    out = []
    for s in settings:
        default = "unset" if s.default is None else s.default_text
        nixos = f" NixOS: {s.nixos}." if s.nixos else ""
        out += [".TP", f"\\fB{_esc(prefix + s.key)}\\fR ({_esc(s.type)}, default {_esc(default)})",
                _esc(s.doc[:1].upper() + s.doc[1:] + "." + nixos)]  # fmt: skip
    return out


def cove_toml_5() -> str:
    from cove.netsettings import VETH_SETTINGS
    from cove.settings import CONTAINER_SETTINGS, HOST_SETTINGS

    out = _header("cove.toml", 5, "File Formats")
    out += [".SH DESCRIPTION",
            _esc("The file cove reads (by default /etc/cove/cove.toml): one [containers.NAME] "
                 "table per container, and an optional [host] table. Keys are the NixOS "
                 "container option names in kebab-case. Every problem is reported at once, "
                 "naming the file and the key."),
            ".SH CONTAINER KEYS"]  # fmt: skip
    out += _settings(CONTAINER_SETTINGS, "")
    out += [".SH EXTRA VETH KEYS", _esc("Each [containers.NAME.extra-veths.LINK] table:")]
    out += _settings(VETH_SETTINGS, "")
    out += [".SH HOST KEYS", _esc("The [host] table:")]
    out += _settings(HOST_SETTINGS, "")
    out += [".SH SEE ALSO", "cove(1)"]
    return "\n".join(out) + "\n"


PAGES = {"1": ("cove.1", cove_1), "5": ("cove.toml.5", cove_toml_5)}
