"""Reading a config file: TOML syntax, unknown keys, types — each mistake tied to its line."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

import tomlkit
from pydantic import ValidationError
from pydantic_core import ErrorDetails
from tomlkit.exceptions import ParseError

from trainer.config.errors import ConfigError, ConfigIssue
from trainer.config.lines import line_of
from trainer.config.schema import SECTIONS, TrainConfig, field_spec, suggest_key, toml_value


def read_text(path: Path) -> str:
    """The config's text; a UTF-8 byte-order mark (Windows Notepad writes one) is dropped: TOML
    parsers read it as part of the first key ("Empty key")."""
    try:
        return path.read_text(encoding="utf-8").removeprefix("\ufeff")
    except FileNotFoundError:
        raise ConfigError([ConfigIssue(
            "error", "", f"the config file {path} does not exist",
            "check the path, or create one with `kazari config new -o FILE`", path=path, code="no-file",
        )], path=path) from None
    except IsADirectoryError:
        raise ConfigError([ConfigIssue(
            "error", "", f"{path} is a folder, not a config file",
            "pass the .toml file itself (create one with `kazari config new -o FILE`)", path=path, code="no-file",
        )], path=path) from None
    except UnicodeDecodeError:
        raise ConfigError([ConfigIssue(
            "error", "", "the config file is not UTF-8 text", "save it as UTF-8", path=path, code="encoding",
        )], path=path) from None
    except OSError as exc:
        raise ConfigError([ConfigIssue(
            "error", "", f"the config file cannot be read ({exc.strerror})",
            "check its permissions", path=path, code="unreadable",
        )], path=path) from None


def parse_toml(text: str, path: Path | None = None) -> tomlkit.TOMLDocument:
    """tomlkit document (keeps comments); syntax errors become a ConfigError with the line."""
    try:
        return tomlkit.parse(text)
    except ParseError as exc:
        message = str(exc).split(" at line ")[0]
        raise ConfigError([ConfigIssue(
            "error", "", f"TOML syntax error: {message} (column {exc.col})",
            'check quotes, brackets and "key = value" on that line', line=exc.line, path=path,
            code="syntax",
        )], path=path) from None


def plain_value(value: Any) -> Any:
    """tomlkit items -> plain Python values."""
    if hasattr(value, "unwrap"):
        return value.unwrap()
    return value


def structure_issues(data: dict[str, Any], text: str, path: Path | None) -> list[ConfigIssue]:
    """Unknown sections and keys (sd-scripts would silently ignore them), with a suggestion."""
    issues = []
    for section, table in data.items():
        if not isinstance(table, dict):
            guess = suggest_key(section)
            fix = (f"did you mean {guess}? Put `{guess.split('.')[1]} = ...` under [{guess.split('.')[0]}]"
                   if guess else f"keys live in sections: {', '.join(SECTIONS)}")
            issues.append(ConfigIssue(
                "error", section, "unknown key outside any section", fix, line=line_of(text, section),
                value=plain_value(table), path=path, code="unknown-key"))
            continue
        if section not in SECTIONS:
            close = difflib.get_close_matches(section, list(SECTIONS), n=1, cutoff=0.6)
            fix = f"did you mean [{close[0]}]?" if close else f"sections are: {', '.join(SECTIONS)}"
            issues.append(ConfigIssue(
                "error", section, "unknown section", fix, line=line_of(text, section), path=path,
                code="unknown-key"))
            continue
        fields = SECTIONS[section].model_fields
        for name, value in table.items():
            if name in fields:
                continue
            key = f"{section}.{name}"
            guess = suggest_key(key, section)
            if guess and guess.split(".")[0] != section:
                fix = f"did you mean {guess}? It belongs under [{guess.split('.')[0]}]"
            elif guess:
                fix = f"did you mean {guess.split('.')[1]}?"
            else:
                fix = f"remove it; [{section}] keys are: {', '.join(fields)}"
            issues.append(ConfigIssue(
                "error", key, "unknown key (sd-scripts would silently ignore it)", fix,
                line=line_of(text, key), value=plain_value(value), path=path, code="unknown-key",
            ))
    return issues


def _example(key: str) -> str:
    spec = field_spec(key)
    default = spec.default
    if default is None or default == [] or default == {}:
        samples = {"path": '"path/to/it"', "int": "1", "float": "0.5", "bool": "true"}
        return f"{spec.name} = {samples.get(spec.kind, '...')}"
    return f"{spec.name} = {tomlkit.item(toml_value(default)).as_string()}"


def _pydantic_issue(err: ErrorDetails, data: dict[str, Any], text: str, path: Path | None) -> ConfigIssue:
    loc = [str(p) for p in err["loc"]]
    key = ".".join(loc[:2])
    try:
        spec = field_spec(key)
    except KeyError:
        spec = None
    value = data.get(loc[0], {}).get(loc[1], err.get("input")) if len(loc) >= 2 else err.get("input")
    kind = err["type"]
    message = err["msg"]
    fix = ""
    if kind.startswith("value_error") or kind == "assertion_error":
        message = message.removeprefix("Value error, ")
        fix = message
        message = "invalid value"
    elif kind == "literal_error" and spec is not None:
        choices = [str(c) for c in spec.choices]
        close = difflib.get_close_matches(str(value), choices, n=1, cutoff=0.5)
        message = "not one of the allowed values"
        fix = (f'did you mean "{close[0]}"? ' if close else "") + "use one of: " + ", ".join(choices)
    elif kind in ("int_type", "int_parsing", "int_from_float"):
        message = "must be a whole number"
        fix = f"write it without quotes or decimals, e.g. {_example(key)}" if spec else ""
    elif kind in ("float_type", "float_parsing"):
        message = "must be a number"
        fix = f"write it without quotes, e.g. {_example(key)}" if spec else ""
    elif kind == "bool_type":
        message = "must be true or false"
        fix = f"write true or false without quotes, e.g. {_example(key)}" if spec else ""
    elif kind in ("string_type", "path_type"):
        message = "must be a quoted string"
        fix = f"e.g. {_example(key)}" if spec else ""
    elif kind in ("greater_than_equal", "greater_than", "less_than_equal", "less_than") and spec:
        lo = spec.minimum
        hi = spec.maximum
        message = "out of range"
        low = f"above {lo}" if spec.exclusive_minimum else f"at least {lo}"
        fix = f"use a value {low}" + (f" and at most {hi}" if hi is not None else "")
    elif kind in ("list_type", "dict_type", "model_type"):
        message = "has the wrong shape"
        fix = f"e.g. {_example(key)}" if spec else ""
    elif kind == "string_too_short":
        message = "must not be empty"
        fix = f"e.g. {_example(key)}" if spec else ""
    if spec is not None and spec.kind == "number" and kind.endswith("_type"):
        message = "must be a number"
        fix = f"write it without quotes, e.g. {_example(key)}"
    if spec is not None and spec.kind == "prompts" and kind.endswith("_type"):
        message = "must be a list of prompt lines or a file path"
        fix = 'e.g. sample_prompts = ["kazari, 1girl, smile --w 512 --h 768 --d 1"]'
    if spec is not None and spec.optional and kind.endswith("_type"):
        fix += ", or delete the line to leave it unset" if fix else "delete the line to leave it unset"
    return ConfigIssue("error", key, message, fix, line=line_of(text, key), value=value, path=path,
                       code="bad-value" if not kind.endswith("_type") else "wrong-type")


def validate_data(data: dict[str, Any], text: str = "", path: Path | None = None
                  ) -> tuple[TrainConfig | None, list[ConfigIssue]]:
    """Schema-check plain TOML data. Returns the config (None when invalid) and the issues."""
    cfg, issues = validate_known(data, text, path)
    return (None if issues else cfg), issues


def validate_known(data: dict[str, Any], text: str = "", path: Path | None = None
                   ) -> tuple[TrainConfig | None, list[ConfigIssue]]:
    """Like :func:`validate_data`, but the config of the *known* keys is returned even when there are
    unknown keys (it is None only on type/value errors), so that a typo does not hide the
    consistency checks of the rest of the file."""
    cfg, issues, bad = validate_checkable(data, text, path)
    return (None if bad else cfg), issues


def validate_checkable(data: dict[str, Any], text: str = "", path: Path | None = None
                       ) -> tuple[TrainConfig | None, list[ConfigIssue], set[str]]:
    """The config of every key that passed its own check, the issues, and the keys that failed.

    A key with a wrong type or value falls back to its default here, so that the consistency
    checks (resolution, required keys...) of the rest of the file run in the same pass: the user
    sees every mistake at once instead of one round per kind. Callers drop the check issues of the
    ``bad`` keys (they would judge the default, not what the user wrote).
    """
    issues = structure_issues(data, text, path)
    known = {
        section: {k: v for k, v in table.items() if k in SECTIONS[section].model_fields}
        for section, table in data.items()
        if section in SECTIONS and isinstance(table, dict)
    }
    bad: set[str] = set()
    for _ in range(4):  # a section-level rule can fail only once the key-level ones pass
        try:
            cfg = TrainConfig.model_validate(known)
        except ValidationError as exc:
            for err in exc.errors():
                key = ".".join(str(p) for p in err["loc"][:2])
                if key in bad:
                    continue  # one message per key (unions report once per member)
                bad.add(key)
                issues.append(_pydantic_issue(err, known, text, path))
            known = {section: ({} if section in bad else {k: v for k, v in table.items()
                                                           if f"{section}.{k}" not in bad})
                     for section, table in known.items()}
            continue
        cfg._source = path
        return cfg, issues, bad
    return None, issues, bad


def checks_of_the_rest(issues: list[ConfigIssue], bad: set[str]) -> list[ConfigIssue]:
    """Check issues minus those about keys that failed their type/value check (see above)."""
    return [i for i in issues if i.key not in bad and i.key.partition(".")[0] not in bad]


def parse_config_text(text: str, path: Path | None = None) -> tuple[TrainConfig | None, list[ConfigIssue]]:
    """Parse + schema-check TOML text (no file-system checks)."""
    doc = parse_toml(text, path)
    data = plain_value(doc)
    return validate_data(data, text, path)


def load_config(path: Path | str, *, check: bool = True, dataset: bool = True) -> TrainConfig:
    """Read, validate and path-resolve a config file; raises :class:`ConfigError` on any error.

    Relative paths are made absolute against the file's folder. With ``check`` the file-system
    and consistency checks of :mod:`trainer.config.checks` run too (``dataset`` includes the
    dataset scan); warnings never raise — get them from :func:`check_config`.
    """
    path = Path(path)
    text = read_text(path)
    cfg, issues, bad = validate_checkable(plain_value(parse_toml(text, path)), text, path)
    if cfg is None or (issues and not check):
        raise ConfigError(issues, path=path)
    cfg = _resolved(cfg, path)
    if check:
        from trainer.config.checks import check_config

        # Unknown keys and wrong types are reported together with the other mistakes, not one
        # round at a time.
        found = issues + checks_of_the_rest(check_config(cfg, text=text, path=path, dataset=dataset), bad)
        if bad or any(i.severity == "error" for i in found):
            raise ConfigError(found, path=path)
    return cfg


def _resolved(cfg: TrainConfig, path: Path) -> TrainConfig:
    out = cfg.resolve_paths(path.resolve().parent)
    out._source = path
    return out

