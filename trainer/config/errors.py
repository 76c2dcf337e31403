"""Config problems: each names the key, the line, the bad value and the fix."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from tagging.errors import UserError

_UNSET = object()


@dataclass(frozen=True)
class ConfigIssue:
    """One problem found in a config. ``severity`` "error" blocks training; "warning" does not."""

    severity: Literal["error", "warning"]
    key: str  # dotted key ("dataset.resolution"), or "" for the file as a whole
    message: str  # what is wrong
    fix: str = ""  # what to do about it
    line: int | None = None  # 1-based line in the file, when known
    value: Any = _UNSET  # the offending value, when there is one
    path: Path | None = None  # the config file
    code: str = ""  # stable machine-readable kind, e.g. "unknown-key"

    @property
    def has_value(self) -> bool:
        return self.value is not _UNSET

    def where(self) -> str:
        place = str(self.path) if self.path else "config"
        if self.line:
            place += f":{self.line}"
        return place

    def __str__(self) -> str:
        return self._text(self.where())

    def brief(self) -> str:
        """The issue without the file name, paths as written (for a panel beside the file's editor)."""
        return self._text(f"line {self.line}" if self.line else "", relative=True)

    def _text(self, where: str, relative: bool = False) -> str:
        head = where + ": " if where else ""
        if self.key:
            head += self.key
            if self.has_value:
                value = self.value
                if relative and isinstance(value, Path) and self.path is not None:
                    try:  # resolved against the config's folder when loaded: show it as written
                        value = value.relative_to(Path(self.path).resolve().parent)
                    except ValueError:
                        pass
                head += f" = {_show(value)}"
            head += ": "
        text = _sentence(head + self.message)
        if self.fix:
            text += " Fix: " + _sentence(self.fix)
        return text

    def to_json(self) -> dict[str, Any]:
        return {
            "severity": self.severity,
            "code": self.code,
            "key": self.key,
            "line": self.line,
            "value": _jsonable(self.value) if self.has_value else None,
            "message": self.message,
            "fix": self.fix,
            "text": str(self),
        }


def _sentence(text: str) -> str:
    text = text.rstrip()
    return text if text.endswith((".", "?", "!")) else text + "."


def _show(value: Any) -> str:
    if isinstance(value, Path):
        return f'"{value.as_posix()}"'
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value) if not isinstance(value, (int, float)) else str(value)


def _jsonable(value: Any) -> Any:
    if isinstance(value, Path):
        return value.as_posix()
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return str(value)


class ConfigError(UserError):
    """The config cannot be used. ``issues`` holds every error (and warning) found."""

    def __init__(self, issues: list[ConfigIssue], *, path: Path | str | None = None) -> None:
        self.issues = list(issues)
        errors = [i for i in self.issues if i.severity == "error"] or self.issues
        if len(errors) == 1:
            text = str(errors[0])
        else:
            text = f"{len(errors)} problems in the config: " + " ".join(
                f"({n}) {issue}" for n, issue in enumerate(errors, 1))
        super().__init__(text, path=path)

    @property
    def errors(self) -> list[ConfigIssue]:
        return [i for i in self.issues if i.severity == "error"]
