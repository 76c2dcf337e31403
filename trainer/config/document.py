"""Editing a config file in place: comments and key order survive, saves are atomic and safe.

The TUI's config editor works on a :class:`ConfigDocument`: it reads values with ``get``,
changes them with ``set`` / ``set_text`` (validated one key at a time, so a form can show the
error next to the field), and writes with ``save``, which refuses to clobber a file that changed
on disk since it was loaded (someone edited it in $EDITOR) unless ``force=True``.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

import tomlkit

from tagging.atomic import atomic_write_text
from tagging.errors import ConflictError, UserError
from trainer.config.errors import ConfigError, ConfigIssue
from trainer.config.lines import line_of
from trainer.config.loading import (
    checks_of_the_rest,
    parse_toml,
    plain_value,
    read_text,
    validate_checkable,
    validate_data,
)
from trainer.config.render import render_toml
from trainer.config.schema import FieldSpec, TrainConfig, field_spec, split_key, toml_value


def _digest(data: bytes | None) -> str | None:
    return None if data is None else hashlib.sha256(data).hexdigest()


def _disk_bytes(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:  # unreadable now: refuse rather than guess whether it changed
        raise UserError(f"Cannot read {path}: {exc.strerror or exc}.", path=path,
                        hint="Check the file's permissions.") from None


_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}


def parse_text_value(spec: FieldSpec, text: str) -> Any:
    """A form field's text -> the typed value for ``spec`` ("" = unset). Raises ValueError."""
    raw = text.strip()
    if raw == "" and (spec.optional or spec.kind == "prompts"):
        return None if spec.optional else []
    if spec.kind == "bool":
        if raw.lower() in _TRUE:
            return True
        if raw.lower() in _FALSE:
            return False
        raise ValueError("type true or false")
    # Python's own "invalid literal for int() with base 10" is no help in a form: say what to type.
    try:
        if spec.kind == "int":
            return int(raw)
        if spec.kind == "float":
            return float(raw)
        if spec.kind == "number":
            return int(raw) if raw.lstrip("-").isdigit() else float(raw)
    except ValueError:
        example = {"int": "a whole number, e.g. 64", "float": "a number, e.g. 0.0001 or 1e-4"}
        raise ValueError(f"type {example.get(spec.kind, 'a number, e.g. 32 or 0.5')}") from None
    if spec.kind == "choice":
        for choice in spec.choices:
            if str(choice).lower() == raw.lower():
                return choice
        return int(raw) if raw.isdigit() else raw
    if spec.kind == "table":
        return plain_value(tomlkit.parse(f"x = {raw or '{}'}")["x"])
    if spec.kind == "prompts":
        lines = [line.strip() for line in raw.splitlines() if line.strip()]
        if len(lines) == 1 and lines[0].lower().endswith((".txt", ".toml", ".json")) and "--" not in lines[0]:
            return lines[0]  # a prompt file path
        return lines
    return raw


class ConfigDocument:
    """A config TOML file open for editing."""

    def __init__(self, path: Path | str, text: str, *, disk_digest: str | None) -> None:
        self.path = Path(path)
        self._doc = parse_toml(text, self.path)
        self._disk_digest = disk_digest
        self._saved_text = text if disk_digest is not None else None

    # --- opening ----------------------------------------------------------------------------

    @classmethod
    def load(cls, path: Path | str) -> ConfigDocument:
        """Open an existing file (a TOML syntax error raises ConfigError with its line)."""
        path = Path(path)
        text = read_text(path)
        return cls(path, text, disk_digest=_digest(text.encode("utf-8")))

    @classmethod
    def new(cls, path: Path | str, cfg: TrainConfig | None = None, *, header: str = "") -> ConfigDocument:
        """A document for a file that does not exist yet (``save`` refuses if one appears meanwhile)."""
        return cls(path, render_toml(cfg or TrainConfig(), header=header), disk_digest=None)

    # --- reading ----------------------------------------------------------------------------

    @property
    def text(self) -> str:
        """The TOML text as it would be saved."""
        return tomlkit.dumps(self._doc)

    @property
    def dirty(self) -> bool:
        return self.text != self._saved_text

    def data(self) -> dict[str, Any]:
        return plain_value(self._doc)

    def has(self, key: str) -> bool:
        """Whether ``key`` is written in the file (False = the default applies)."""
        section, name = split_key(key)
        table = self._doc.get(section)
        return isinstance(table, dict) and name in table

    def validate(self) -> tuple[TrainConfig | None, list[ConfigIssue]]:
        return validate_data(self.data(), self.text, self.path)

    @property
    def config(self) -> TrainConfig:
        """The config as written (paths as in the file); ConfigError while the file has errors."""
        cfg, issues = self.validate()
        if cfg is None:
            raise ConfigError(issues, path=self.path)
        return cfg

    def resolved_config(self) -> TrainConfig:
        """The config with relative paths made absolute against the file's folder."""
        cfg = self.config.resolve_paths(self.path.resolve().parent)
        cfg._source = self.path
        return cfg

    def get(self, key: str) -> Any:
        """The typed value of ``key``: from the file when valid there, else the default."""
        section, name = split_key(key)
        spec = field_spec(key)
        table = self._doc.get(section)
        if isinstance(table, dict) and name in table:
            candidate = {section: {name: plain_value(table[name])}}
            cfg, issues = validate_data(candidate)
            if cfg is not None:
                return cfg.get(key)
        return spec.default

    def issues(self, *, check: bool = True, dataset: bool = True) -> list[ConfigIssue]:
        """Every problem at once: unknown keys, wrong types and values, file-system and consistency checks."""
        cfg, issues, bad = validate_checkable(self.data(), self.text, self.path)
        if cfg is None or not check:
            return issues
        from trainer.config.checks import check_config

        # Unknown keys and bad values (already in ``issues``) must not hide the checks of the rest.
        resolved = cfg.resolve_paths(self.path.resolve().parent)
        resolved._source = self.path
        found = check_config(resolved, text=self.text, path=self.path, dataset=dataset)
        return issues + checks_of_the_rest(found, bad)

    # --- editing ----------------------------------------------------------------------------

    def set(self, key: str, value: Any) -> None:
        """Validate and write one key (``None`` unsets it). Raises ConfigError naming the key."""
        section, name = split_key(key)
        if value is None:
            self.unset(key)
            return
        candidate = {section: {name: toml_value(value)}}
        cfg, issues = validate_data(candidate, path=self.path)
        mine = [i for i in issues if i.key == key] or issues
        if cfg is None:
            line = line_of(self.text, key) if self.has(key) else None
            raise ConfigError([_at_line(i, line) for i in mine], path=self.path)
        typed = toml_value(cfg.get(key))
        table = self._doc.get(section)
        if not self.has(key) and self._fill_placeholder(section, name, typed):
            return
        if not isinstance(table, dict):
            table = tomlkit.table()
            self._doc.add(section, table)
        table[name] = _item(typed)

    def _fill_placeholder(self, section: str, name: str, value: Any) -> bool:
        """Turn a commented ``# name = ...`` line of ``[section]`` into the real key, in place."""
        lines = self.text.splitlines(keepends=True)
        inside = False
        pattern = re.compile(rf"^\s*#\s*{re.escape(name)}\s*=")
        for i, line in enumerate(lines):
            stripped = line.strip()
            if stripped.startswith("[") and not stripped.startswith("[["):
                inside = stripped.strip("[] ") == section
                continue
            if inside and pattern.match(line):
                item = _item(value)
                lines[i] = f"{name} = {item.as_string()}\n"
                self._doc = parse_toml("".join(lines), self.path)
                return True
        return False

    def set_text(self, key: str, text: str) -> None:
        """``set`` from what a user typed in a form field ("" unsets an optional key)."""
        spec = field_spec(key)
        try:
            value = parse_text_value(spec, text)
        except (ValueError, tomlkit.exceptions.ParseError) as exc:
            raise ConfigError([ConfigIssue(
                "error", key, f"cannot read {text!r} as {spec.kind}", str(exc) or f"type a {spec.kind}",
                value=text, path=self.path, code="wrong-type",
            )], path=self.path) from None
        self.set(key, value)

    def unset(self, key: str) -> None:
        """Remove ``key`` from the file, so its default applies."""
        section, name = split_key(key)
        table = self._doc.get(section)
        if isinstance(table, dict) and name in table:
            del table[name]

    # --- saving -----------------------------------------------------------------------------

    def changed_on_disk(self) -> bool:
        """Whether the file differs from what this document loaded or last saved."""
        return _digest(_disk_bytes(self.path)) != self._disk_digest

    def save(self, *, force: bool = False) -> bool:
        """Write atomically if changed. Returns False when there was nothing to write.

        Raises ConflictError when the file changed on disk since it was loaded (or was created
        meanwhile, for a new document) unless ``force``.
        """
        if not force and self.changed_on_disk():
            raise ConflictError(
                f"{self.path} changed on disk since kazari loaded it; saving would overwrite that edit.",
                path=self.path,
                hint="Reload it to see the other change (or save with force to overwrite it).",
            )
        text = self.text
        if text == self._saved_text and not self.changed_on_disk():
            return False
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self.path, text)
        except OSError as exc:
            raise UserError(f"Cannot write {self.path}: {exc.strerror or exc}; the file is unchanged.",
                            path=self.path, hint="Check that its folder exists and is writable, "
                            "or choose another file name.") from None
        self._saved_text = text
        self._disk_digest = _digest(text.encode("utf-8"))
        return True

    def reload(self) -> None:
        """Drop unsaved edits and read the file again."""
        text = read_text(self.path)
        self._doc = parse_toml(text, self.path)
        self._saved_text = text
        self._disk_digest = _digest(text.encode("utf-8"))


def _item(value: Any) -> Any:
    if isinstance(value, dict):
        inline = tomlkit.inline_table()
        inline.update(value)
        return inline
    return tomlkit.item(value)


def _at_line(issue: ConfigIssue, line: int | None) -> ConfigIssue:
    from dataclasses import replace

    return replace(issue, line=line)
