"""Errors a person can act on: each names the file, line and column, and a way out."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any


class Severity(str, Enum):
    ERROR = "error"
    WARNING = "warning"


@dataclass(frozen=True)
class Diagnostic:
    """One problem in one file, printed as `file:line:col: error: $.path: message`."""

    file: str
    line: int  # 1-based; 0 when unknown
    col: int  # 1-based; 0 when unknown
    message: str
    json_path: str = "$"
    severity: Severity = Severity.ERROR

    def format(self) -> str:
        return (
            f"{self.file}:{self.line}:{self.col}: {self.severity.value}: "
            f"{self.json_path}: {self.message}"
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "line": self.line,
            "col": self.col,
            "severity": self.severity.value,
            "path": self.json_path,
            "message": self.message,
        }


class RunnerError(Exception):
    """Base of every error the runner reports to a person without a traceback."""


class ValidationFailed(RunnerError):
    """A scene or config file was rejected; `diagnostics` holds every problem at once."""

    def __init__(self, diagnostics: list[Diagnostic]) -> None:
        self.diagnostics = diagnostics
        super().__init__("\n".join(d.format() for d in diagnostics))

    @property
    def errors(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.severity is Severity.ERROR]


# Each is a ValueError or KeyError as well, as before it had a home here: code that
# catches those still catches it.


class ShowError(RunnerError, ValueError):
    """A show's cron, time or days cannot be read; the text says which and how to fix it."""


class OffsetError(RunnerError, ValueError):
    """A time that cannot be read; its text is the sentence shown to staff."""


class TagError(RunnerError):
    """Raised by a tag handler (e.g. a missing `!secret`); becomes a diagnostic at the tag."""


class UnknownSceneError(RunnerError, KeyError):
    """A scene id or file that is not there (not loaded, or no such file); says what is."""

    def __str__(self) -> str:  # the sentence, not KeyError's repr of it
        return str(self.args[0]) if self.args else ""
