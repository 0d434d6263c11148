"""Exceptions that the CLI turns into messages and exit codes (DESIGN §8)."""

from __future__ import annotations

from dataclasses import dataclass

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_NOT_FOUND = 3
EXIT_RUN_FAILED = 125


class CoveError(Exception):
    """An operation failed; `hint` tells the user what to do next."""

    exit_code = EXIT_FAILED

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


class NotFound(CoveError):
    exit_code = EXIT_NOT_FOUND


class UsageError(CoveError):
    exit_code = EXIT_USAGE


class NotRunning(CoveError):
    """`run`/`root-login` on a container that is not up: 125, like Podman."""

    exit_code = EXIT_RUN_FAILED


@dataclass(frozen=True)
class Diagnostic:
    file: str
    path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}: {self.path}" if self.path else self.file
        return f"{where}: {self.message}"


class ConfigError(CoveError):
    """One or more problems in a config file, all reported together."""

    exit_code = EXIT_USAGE

    def __init__(self, diagnostics: list[Diagnostic]) -> None:
        self.diagnostics = diagnostics
        keyed = any(d.path for d in diagnostics)
        super().__init__(
            "\n".join(str(d) for d in diagnostics),
            hint="fix the keys named above; `cove options` lists every key with its type"
            if keyed
            else None,
        )
