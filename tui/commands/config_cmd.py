"""`kazari config` — create, check, show, import and export training configs.

    kazari config new [--preset NAME] [--set KEY=VALUE ...] -o FILE [--force]
    kazari config check FILE [--json] [--no-dataset]     exit 0 valid, 1 invalid (messages on stdout)
    kazari config show FILE [--json] [--speed S_PER_STEP]
    kazari config import-kohya FILE [--dataset-config FILE] -o FILE [--force]
    kazari config export-kohya FILE -o DIR [--force]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from tagging.errors import UserError


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("config", help="create, check and convert training configs",
                            description="Training config files: create, check, show, import/export sd-scripts.")
    actions = parser.add_subparsers(dest="config_action", metavar="ACTION")

    p = actions.add_parser("new", help="write a new config from a preset")
    p.add_argument("--preset", default="anime-character", help="anime-character | low-vram | quick-test")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="set a key, e.g. --set dataset.train_data_dir=data (repeatable)")
    p.add_argument("-o", "--output", required=True, type=Path, help="config file to write")
    p.add_argument("--force", action="store_true", help="overwrite an existing file")
    p.set_defaults(func=cmd_new)

    p = actions.add_parser("check", help="validate a config (exit 0 valid, 1 invalid)")
    p.add_argument("file", type=Path)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--no-dataset", action="store_true", help="skip scanning the dataset")
    p.set_defaults(func=cmd_check)

    p = actions.add_parser("show", help="show a config with derived figures (steps, buckets, time)")
    p.add_argument("file", type=Path)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--speed", type=float, default=None, metavar="S_PER_STEP",
                   help="measured seconds per step, for the time estimate")
    p.set_defaults(func=cmd_show)

    p = actions.add_parser("import-kohya", help="import a sd-scripts config TOML or lora-scripts train.sh")
    p.add_argument("file", type=Path, help="--config_file TOML, or train.sh / train.ps1")
    p.add_argument("--dataset-config", type=Path, default=None, help="sd-scripts --dataset_config TOML")
    p.add_argument("-o", "--output", required=True, type=Path, help="kazari config to write")
    p.add_argument("--force", action="store_true", help="overwrite an existing file")
    p.set_defaults(func=cmd_import)

    p = actions.add_parser("export-kohya", help="write sd-scripts TOMLs and print the launch command")
    p.add_argument("file", type=Path)
    p.add_argument("-o", "--output", required=True, type=Path, help="folder for config.toml / dataset.toml")
    p.add_argument("--force", action="store_true", help="replace export files that have other content")
    p.set_defaults(func=cmd_export)

    parser.set_defaults(func=lambda args: (parser.print_help(), 2)[1])


def _refuse_overwrite(path: Path, force: bool) -> None:
    if path.is_dir():
        raise UserError(f"{path} is a folder; -o needs a config file name.", path=path,
                        hint=f"e.g. -o {path / 'train.toml'}")
    if path.exists() and not force:
        raise UserError(f"{path} already exists; kazari does not overwrite it.",
                        path=path, hint="Choose another file name, or pass --force to replace it.")


def cmd_new(args: argparse.Namespace) -> int:
    from trainer.config import ConfigDocument, preset
    from trainer.config.presets import DESCRIPTIONS

    _refuse_overwrite(args.output, args.force)
    cfg = preset(args.preset)
    header = f"kazari training config — preset {args.preset}: {DESCRIPTIONS[args.preset]}\n" \
             "Relative paths are read from this file's folder. Keys: docs/config.md"
    doc = ConfigDocument.new(args.output, cfg, header=header)
    for item in args.sets:
        key, sep, value = item.partition("=")
        if not sep:
            raise UserError(f"--set {item!r} is not KEY=VALUE.", hint="e.g. --set dataset.train_data_dir=data")
        try:
            doc.set_text(key.strip(), value)
        except KeyError:
            from trainer.config.schema import suggest_key

            guess = suggest_key(key.strip())
            raise UserError(f"--set: unknown key {key.strip()!r}.",
                            hint=f"Did you mean {guess}?" if guess else "See docs/config.md.") from None
    doc.save(force=args.force)
    print(f"wrote {args.output} (preset {args.preset})")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from trainer.config import ConfigDocument, ConfigError

    try:
        doc = ConfigDocument.load(args.file)
        issues = doc.issues(dataset=not args.no_dataset)
    except ConfigError as err:
        if not any(i.code in ("syntax", "encoding") for i in err.issues):
            raise  # no file to judge (missing, unreadable): a usage error, exit 2
        issues = err.issues
    errors = [i for i in issues if i.severity == "error"]
    warnings = [i for i in issues if i.severity == "warning"]
    if args.json:
        print(json.dumps({
            "version": 1, "file": str(args.file), "valid": not errors,
            "errors": [i.to_json() for i in errors], "warnings": [i.to_json() for i in warnings],
        }, indent=2))
    else:
        for issue in errors + warnings:
            print(f"{issue.severity}: {issue}")
        print(f"{args.file}: " + ("invalid" if errors else "valid")
              + f" ({len(errors)} error(s), {len(warnings)} warning(s))")
    return 1 if errors else 0


def _value_text(value: Any) -> str:
    from trainer.config.schema import toml_value

    if value is None:
        return "(unset)"
    import tomlkit

    return tomlkit.item(toml_value(value)).as_string()


def cmd_show(args: argparse.Namespace) -> int:
    from trainer.config import ConfigDocument, derived_figures
    from trainer.config.schema import field_specs

    doc = ConfigDocument.load(args.file)
    issues = doc.issues()
    errors = [i for i in issues if i.severity == "error"]
    cfg, schema_issues = doc.validate()
    if cfg is None:
        for issue in schema_issues:
            print(f"error: {issue}", file=sys.stderr)
        return 1
    resolved = doc.resolved_config()
    figures = None
    figures_error = None
    try:
        figures = derived_figures(resolved, seconds_per_step=args.speed)
    except UserError as exc:
        figures_error = str(exc)
    if args.json:
        print(json.dumps({
            "version": 1, "file": str(args.file), "valid": not errors,
            "config": resolved.model_dump(mode="json"),
            "derived": figures.to_json() if figures else None, "derived_error": figures_error,
            "issues": [i.to_json() for i in issues],
        }, indent=2))
        return 1 if errors else 0
    section = None
    for spec in field_specs():
        if spec.section != section:
            section = spec.section
            print(f"[{section}]")
        mark = "" if doc.has(spec.key) else "  (default)"
        print(f"  {spec.name} = {_value_text(cfg.get(spec.key))}{mark}")
    print()
    if figures is not None:
        print("derived:")
        for line in figures.lines():
            print(f"  {line}")
    else:
        print(f"derived: not available — {figures_error}")
    for issue in issues:
        print(f"{issue.severity}: {issue}")
    return 1 if errors else 0


def cmd_import(args: argparse.Namespace) -> int:
    import tomlkit

    from trainer.config import ConfigDocument
    from trainer.config.kohya import import_kohya

    _refuse_overwrite(args.output, args.force)
    result = import_kohya(args.file, args.dataset_config)
    if result.errors:
        # Writing a config that trains something else than the sd-scripts files would is worse than none.
        print(f"kazari: {args.file} cannot be imported as it is; nothing was written:", file=sys.stderr)
        for line in result.report_lines():
            print(line, file=sys.stderr)
        return 1
    source = str(args.file) + (f" + {args.dataset_config}" if args.dataset_config else "")
    doc = ConfigDocument.new(args.output, result.config, header=f"kazari training config imported from {source}")
    text = doc.text
    if result.unmapped or result.notes:
        block = ["", "# --- from the import ---"]
        if result.unmapped:
            block.append("# sd-scripts options kazari does not use (kept here for reference):")
            for name, value in result.unmapped.items():
                block.append(f"#   {name} = {_toml_text(tomlkit, value)}")
        block.extend(f"# note: {note}" for note in result.notes)
        text = text.rstrip("\n") + "\n" + "\n".join(block) + "\n"
    from tagging.atomic import atomic_write_text

    try:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(args.output, text)
    except OSError as exc:
        raise UserError(f"Cannot write {args.output}: {exc.strerror or exc}; nothing was written.",
                        path=args.output, hint="Check that its folder is writable, or choose another -o.") from None
    print(f"wrote {args.output}")
    for line in result.report_lines():
        print(line)
    return 0


def _toml_text(tomlkit: Any, value: Any) -> str:
    try:
        return tomlkit.item(value).as_string().replace("\n", " ")
    except Exception:  # noqa: BLE001 - any odd value is shown with repr instead
        return repr(value)


def cmd_export(args: argparse.Namespace) -> int:
    from trainer.config import ConfigDocument
    from trainer.config.kohya import export_kohya

    cfg = ConfigDocument.load(args.file).resolved_config()
    result = export_kohya(cfg, args.output, force=args.force)
    print(f"wrote {result.config_file}")
    for extra in (result.dataset_config, result.prompt_file):
        if extra is not None:
            print(f"wrote {extra}")
    for note in result.notes:
        print(f"note: {note}")
    print()
    print("run in the sd-scripts folder:")
    print(f"  {result.command}")
    return 0
