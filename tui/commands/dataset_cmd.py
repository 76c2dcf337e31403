"""`kazari dataset ...`: inspect, check and bulk-edit a dataset from the shell.

Sub-commands: info, lint, stats, suggest, edit, undo, redo, history, revert, repeats, trash, character.
``--json`` output is a stable contract documented in docs/cli.md. Exit codes: 0 ok, 1 lint
found errors (or nothing to undo/redo), 2 usage or I/O error (one paragraph via ``tui.cli``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from tagging import captions
from tagging.dataset import Dataset, check_caption_ext
from tagging.edits import (
    AddTag,
    Chain,
    Change,
    DropPattern,
    MoveToEnd,
    MoveToFront,
    Normalize,
    RemoveTags,
    ReplaceTag,
    SetTrigger,
    TagOp,
)
from tagging.errors import UserError
from tagging.features import DEFAULT_THRESHOLD, suggest_features
from tagging.lint import DEFAULT_MIN_SIZE, has_errors, lint, min_size_for_resolution
from tagging.query import compile_query, filter_keys
from tagging.stats import step_counts, tag_frequency
from tui.workspace import config_for_dataset, training_resolution

JSON_VERSION = 1


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "dataset", help="inspect, lint and bulk-edit a dataset",
        description="Inspect, lint and bulk-edit a character-LoRA dataset (kohya N_name layout or a plain folder).",
    )
    commands = parser.add_subparsers(dest="dataset_command", metavar="ACTION")
    parser.set_defaults(func=lambda args: _usage(parser))

    def add(name: str, help_text: str, func: Any) -> argparse.ArgumentParser:
        p = commands.add_parser(name, help=help_text, description=help_text)
        p.add_argument("root", metavar="ROOT", help="dataset folder (contains N_name subfolders, or images)")
        p.add_argument("--json", action="store_true", help="machine-readable output (see docs/cli.md)")
        p.add_argument("--caption-ext", default=".txt", metavar="EXT", help="caption extension (default .txt)")
        p.add_argument("--reg", metavar="DIR", help="regularisation images folder (same layout)")
        p.set_defaults(func=func)
        return p

    add("info", "folders, repeats, image/caption counts and skipped entries", _info)
    p = add("lint", "check captions and images; exit 1 if any error-level finding", _lint)
    p.add_argument("--min-size", type=int, metavar="PX",
                   help="flag images whose short side is below PX (default: half the config's "
                        f"[dataset] resolution, else {DEFAULT_MIN_SIZE})")
    p.add_argument("--config", metavar="FILE",
                   help="config whose resolution sets --min-size (default: kazari.toml in ROOT or its parent)")
    p.add_argument("--trigger", metavar="NAME", help="trigger word to check (default: from the folder names)")
    p.add_argument("--no-images", action="store_true", help="skip decoding images (no corrupt/duplicate checks)")
    p = add("stats", "tag frequencies", _stats)
    p.add_argument("--top", type=int, metavar="N", help="show the N most frequent tags (text default 40)")
    p.add_argument("--sort", choices=("count", "name"), default="count")
    p.add_argument("--where", metavar="QUERY", help="only images matching a tag query")
    p = add("suggest", "character-feature tags per folder (candidates to prune)", _suggest)
    p.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD, metavar="SHARE",
                   help=f"minimum share of a folder's images (default {DEFAULT_THRESHOLD})")
    p = add("edit", "apply tag edits to all (or --where) images and save", _edit)
    p.add_argument("--remove", action="extend", nargs="+", default=[], metavar="TAG", help="remove tags")
    p.add_argument("--replace", action="extend", nargs="+", default=[], metavar="OLD=NEW",
                   help="rename a tag (merging duplicates)")
    p.add_argument("--drop", action="extend", nargs="+", default=[], metavar="GLOB",
                   help="remove tags matching a glob pattern, e.g. '*_background'")
    p.add_argument("--add", action="extend", nargs="+", default=[], metavar="TAG", help="add tags at the end")
    p.add_argument("--add-front", action="extend", nargs="+", default=[], metavar="TAG", help="add tags at the front")
    p.add_argument("--to-front", action="extend", nargs="+", default=[], metavar="TAG", help="move tags to the front")
    p.add_argument("--to-end", action="extend", nargs="+", default=[], metavar="TAG", help="move tags to the end")
    p.add_argument("--trigger", metavar="NAME", help="put the trigger word first, exactly once")
    p.add_argument("--normalize", action="append", default=[], metavar="MODE", choices=list(Normalize.MODES),
                   help="explicit spelling change: " + ", ".join(Normalize.MODES))
    p.add_argument("--where", metavar="QUERY", help="only images matching a tag query, e.g. '1girl AND NOT hat*'")
    p.add_argument("--dry-run", action="store_true", help="show what would change; write nothing")
    p.add_argument("--force", action="store_true", help="overwrite captions that changed on disk since loading")
    p = add("undo", "undo the last edit (persisted history) and save", _undo)
    p.add_argument("--force", action="store_true", help="overwrite captions that changed on disk")
    p = add("redo", "redo the last undone edit and save", _redo)
    p.add_argument("--force", action="store_true", help="overwrite captions that changed on disk")
    add("history", "list the edit history (newest last)", _history)
    p = add("repeats", "set a folder's repeat count (renames N_name; undoable)", _repeats)
    p.add_argument("folder", metavar="FOLDER", help="folder name, e.g. 10_kazari")
    p.add_argument("count", metavar="N", type=int, help="new repeat count (>= 1)")
    p = add("trash", "move images (with captions) to ROOT/.kazari/trash/ (undoable)", _trash)
    p.add_argument("keys", metavar="KEY", nargs="+", help="image keys, e.g. 10_kazari/001.png")
    add("revert", "put every caption back as it arrived (originals in .kazari/originals/)", _revert)
    p = add("character", "show or edit the character profile (ROOT/.kazari/character.toml): trigger, "
            "fixed features, never-add tags — honoured by `kazari tag` and checked by lint", _character)
    p.add_argument("--show", action="store_true", help="print the profile (the default with no edit)")
    p.add_argument("--trigger", metavar="WORD", help="set the trigger word ('' clears it)")
    p.add_argument("--add-feature", action="extend", nargs="+", default=[], metavar="TAG",
                   help="record fixed features (tags pruned from captions so the trigger learns them)")
    p.add_argument("--remove-feature", action="extend", nargs="+", default=[], metavar="TAG",
                   help="forget features (the tagger may write them again)")
    p.add_argument("--never", action="extend", nargs="+", default=[], metavar="TAG",
                   help="tags the tagger must never write (e.g. the model's character tag)")
    p.add_argument("--allow", action="extend", nargs="+", default=[], metavar="TAG",
                   help="take tags off the never-add list")


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


# ---- helpers -------------------------------------------------------------------------------------

def _open(args: argparse.Namespace) -> Dataset:
    _safe_stdout()
    return Dataset.open(args.root, caption_ext=args.caption_ext, reg_root=args.reg)


def _writing(func: Any, validate: Any = None) -> Any:
    """Run a writing sub-command holding the dataset lock from load to save (one writer at a time).

    The lock is taken before the dataset is read, so a second writer either waits for the first
    to finish and then edits what it wrote, or refuses (LockBusy, exit 2) with nothing changed.
    """
    def run(args: argparse.Namespace) -> int:
        if validate is not None:
            validate(args)  # bad arguments fail before anything (even the lock file) is created
        if getattr(args, "dry_run", False):
            return func(args, _open(args))
        _safe_stdout()
        with Dataset.locked(args.root, caption_ext=args.caption_ext, reg_root=args.reg) as ds:
            return func(args, ds)

    run.__name__ = func.__name__
    return run


def _safe_stdout() -> None:
    # Non-ASCII paths (Chinese/Japanese folder names) must not crash a C-locale terminal.
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            try:
                reconfigure(errors="backslashreplace")
            except (ValueError, OSError):
                pass


def _emit(data: dict[str, Any]) -> None:
    print(json.dumps({"version": JSON_VERSION, **data}, ensure_ascii=False, indent=2))


def _warn(ds: Dataset) -> None:
    for warning in ds.warnings:
        print(f"kazari: warning: {warning}", file=sys.stderr)


def _rel(ds: Dataset, path: Path) -> str:
    try:
        return path.relative_to(ds.root).as_posix()
    except ValueError:
        return path.as_posix()


def _split_tags(values: list[str]) -> list[str]:
    # "--remove 'hat, solo'" and "--remove hat solo" both work: tags never contain commas.
    return [tag for value in values for tag in captions.parse_caption(value)]


# ---- info ----------------------------------------------------------------------------------------

def _info(args: argparse.Namespace) -> int:
    ds = _open(args)
    folders = []
    for f in (*ds.folders, *ds.reg_folders):
        folders.append({
            "name": f.name,
            "path": f.path.as_posix(),
            "repeats": f.repeats,
            "trigger": f.trigger,
            "class_tokens": f.class_tokens,
            "is_reg": f.is_reg,
            "plain": f.plain,
            "images": len(f.images),
            "captions": sum(1 for i in f.images if i.caption_exists),
            "missing_captions": sum(1 for i in f.images if not i.caption_exists),
            "unreadable_captions": sum(1 for i in f.images if i.caption_error),
        })
    steps = step_counts(ds)
    data = {
        "root": ds.root.as_posix(),
        "caption_extension": ds.caption_ext,
        "layout": "plain" if any(f.plain for f in ds.folders) else "kohya",
        "folders": folders,
        "totals": {
            "folders": len(ds.folders),
            "images": len(ds.images),
            "captions": sum(1 for i in ds.images if i.caption_exists),
            "reg_images": sum(len(f.images) for f in ds.reg_folders),
            "samples_per_epoch": steps.samples_per_epoch,
        },
        "skipped": [{"path": _rel(ds, s.path), "code": s.code, "reason": s.reason} for s in ds.skipped],
        "warnings": ds.warnings,
    }
    if args.json:
        _emit(data)
        return 0
    print(f"Dataset {ds.root} ({data['layout']} layout, captions {ds.caption_ext})")
    for f in folders:
        kind = "reg " if f["is_reg"] else ""
        print(f"  {kind}{f['name']}: {f['images']} images x {f['repeats']} repeats, "
              f"{f['captions']} captions ({f['missing_captions']} missing, {f['unreadable_captions']} unreadable)"
              + (f", trigger {f['trigger']}" if f["trigger"] else ""))
    t = data["totals"]
    print(f"Total: {t['images']} training images in {t['folders']} folder(s); "
          f"{t['samples_per_epoch']} samples per epoch (batch 1: {steps.steps_per_epoch} steps/epoch)")
    if ds.skipped:
        print(f"Skipped or special ({len(ds.skipped)}):")
        for s in ds.skipped:
            print(f"  [{s.code}] {_rel(ds, s.path)}: {s.reason}")
    for w in ds.warnings:
        print(f"warning: {w}")
    return 0


# ---- lint ----------------------------------------------------------------------------------------

def _lint_min_size(args: argparse.Namespace, root: Path) -> int:
    if args.min_size is not None:
        return int(args.min_size)
    if args.config and not Path(args.config).is_file():
        raise UserError(f"--config {args.config}: no such file. Give the kazari.toml that trains this dataset.")
    config = Path(args.config) if args.config else config_for_dataset(root)
    return min_size_for_resolution(training_resolution(config))


def _lint(args: argparse.Namespace) -> int:
    if args.min_size is not None and args.min_size < 1:
        raise UserError(f"--min-size must be a positive number of pixels, not {args.min_size}.")
    ds = _open(args)
    findings = lint(ds, min_size=_lint_min_size(args, ds.root), check_images=not args.no_images, trigger=args.trigger)
    counts = {sev: sum(1 for f in findings if f.severity == sev) for sev in ("error", "warning", "info")}
    if args.json:
        _emit({"root": ds.root.as_posix(), "counts": counts, "findings": [f.to_dict(ds.root) for f in findings]})
    else:
        _warn(ds)
        for f in findings:
            print(f"{f.severity:7} {f.code:22} {f.message}")
        print(f"{counts['error']} error(s), {counts['warning']} warning(s), {counts['info']} info "
              f"in {len(ds.images)} images")
    return 1 if has_errors(findings) else 0


# ---- stats / suggest -----------------------------------------------------------------------------

def _stats(args: argparse.Namespace) -> int:
    ds = _open(args)
    items = ds.images
    if args.where:
        keys = set(filter_keys(items, args.where))
        items = [i for i in items if i.key in keys]
    rows = tag_frequency(items, sort=args.sort)
    top = args.top if args.top is not None else (None if args.json else 40)
    if top is not None and top < 0:
        raise UserError(f"--top must be 0 or more, not {top}.")
    shown = rows if top is None else rows[:top]
    if args.json:
        _emit({
            "root": ds.root.as_posix(), "images": len(items), "unique_tags": len(rows),
            "tags": [{"tag": r.tag, "count": r.count, "share": round(r.share, 4)} for r in shown],
        })
        return 0
    _warn(ds)
    print(f"{len(rows)} distinct tags in {len(items)} images")
    width = max((len(r.tag) for r in shown), default=0)
    for r in shown:
        print(f"  {r.tag:{width}}  {r.count:6}  {r.share:6.1%}")
    return 0


def _suggest(args: argparse.Namespace) -> int:
    ds = _open(args)
    result = suggest_features(ds, threshold=args.threshold)
    if args.json:
        _emit({"root": ds.root.as_posix(), "threshold": args.threshold, "folders": [r.to_dict() for r in result]})
        return 0
    for r in result:
        print(f"{r.folder} ({r.images} images): feature tags in >= {args.threshold:.0%}")
        if not r.features:
            print("  (none)")
        for f in r.features:
            print(f"  {f.tag:28} {f.category:10} {f.count:5}  {f.share:6.1%}")
    print("Feature tags describe the character itself; pruning them binds them to the trigger word.")
    return 0


# ---- edit / undo / redo / history / revert ------------------------------------------------------

def _build_ops(args: argparse.Namespace) -> list[TagOp]:
    ops: list[TagOp] = []
    for spec in args.replace:
        old, sep, new = spec.partition("=")
        if not sep or not old.strip() or not new.strip():
            raise UserError(f"--replace {spec!r} is not OLD=NEW; write e.g. --replace blonde_hair=pink_hair.")
        ops.append(ReplaceTag(old.strip(), new.strip()))
    if args.remove:
        ops.append(RemoveTags(_split_tags(args.remove)))
    if args.drop:
        ops.append(DropPattern(_split_tags(args.drop)))
    for mode in args.normalize:
        ops.append(Normalize(mode))
    ops.extend(AddTag(tag, "end") for tag in _split_tags(args.add))
    ops.extend(AddTag(tag, "front") for tag in reversed(_split_tags(args.add_front)))
    if args.to_front:
        ops.append(MoveToFront(_split_tags(args.to_front)))
    if args.to_end:
        ops.append(MoveToEnd(_split_tags(args.to_end)))
    if args.trigger:
        ops.append(SetTrigger(args.trigger.strip()))  # last, so it ends up first
    return ops


def _change_rows(ds: Dataset, change: Change) -> list[dict[str, Any]]:
    rows = []
    for key in change.after:
        item = ds._index.get(key)  # noqa: SLF001 - cheap lookup; the key may be gone after a trash
        before, after = change.before.get(key, []), change.after[key]
        before_set, after_set = set(before), set(after)  # sets: a 1 MB caption must not go quadratic
        rows.append({
            "key": key,
            "path": _rel(ds, item.caption_path) if item else key,
            "removed": [t for t in before if t not in after_set],
            "added": [t for t in after if t not in before_set],
            "before": before,
            "after": after,
        })
    return rows


def _print_rows(rows: list[dict[str, Any]], limit: int = 50) -> None:
    for row in rows[:limit]:
        diff = [f"-{t}" for t in row["removed"]] + [f"+{t}" for t in row["added"]]
        print(f"  {row['path']}: {' '.join(diff) if diff else '(order changed)'}")
    if len(rows) > limit:
        print(f"  ... and {len(rows) - limit} more")


def _edit_ops(args: argparse.Namespace) -> list[TagOp]:
    ops = _build_ops(args)
    if not ops:
        raise UserError(
            "kazari dataset edit needs at least one edit: --remove, --replace, --drop, --add, --add-front, "
            "--to-front, --to-end, --trigger or --normalize."
        )
    if args.where:
        compile_query(args.where)
    check_caption_ext(args.caption_ext)
    return ops


def _edit_impl(args: argparse.Namespace, ds: Dataset) -> int:
    ops = _edit_ops(args)
    keys = filter_keys(ds.images, args.where) if args.where else None
    op = ops[0] if len(ops) == 1 else Chain(ops)
    suggested = ({f.tag for fs in suggest_features(ds) for f in fs.features}
                 if (args.remove or args.drop) and not args.dry_run else set())
    change = ds.apply(op, keys)
    rows = _change_rows(ds, change)
    written: list[str] = []
    kept = 0
    if not args.dry_run and len(change):
        report = ds.save(force=args.force)
        written = [_rel(ds, ds.image(k).caption_path) for k in report.written]
        kept = len(report.originals_kept)
    recorded = _record_pruned_features(ds, change, suggested) if written else []
    selected = len(ds.images) if keys is None else len(keys)
    unreadable = [{"path": _rel(ds, i.caption_path), "reason": i.caption_error} for i in ds.read_only_items(keys)]
    _warn(ds)
    if args.json:
        _emit({
            "root": ds.root.as_posix(), "edit": change.label, "dry_run": args.dry_run, "selected": selected,
            "changed": rows, "written": written, "originals_kept": kept, "skipped": unreadable,
            "features_recorded": recorded,
        })
        return 0
    verb = "would change" if args.dry_run else "changed"
    print(f"{change.label}: {verb} {len(rows)} of {selected} caption(s)"
          + (f"; {len(unreadable)} skipped (cannot be read, left untouched):" if unreadable else ""))
    for row in unreadable:
        print(f"  skipped {row['path']}: {row['reason']}")
    _print_rows(rows)
    if written:
        print(f"Saved {len(written)} file(s); undo with: kazari dataset undo {args.root}")
    if recorded:
        print(f"Recorded pruned feature tag(s) {', '.join(recorded)} in the character profile, so the tagger "
              f"will not write them back (kazari dataset character {args.root} --remove-feature … forgets).")
    return 0


def _record_pruned_features(ds: Dataset, change: Change, suggested: set[str]) -> list[str]:
    """Suggested feature tags an edit removed are fixed features: remember them in the profile."""
    from tagging.character import record_pruned

    removed = {t for key, after in change.after.items() for t in change.before.get(key, []) if t not in after}
    return record_pruned(ds.root, sorted(removed & suggested)) if removed & suggested else []


def _character(args: argparse.Namespace) -> int:
    from tagging.character import load_character, profile_path, save_character

    _safe_stdout()
    root = Path(args.root)
    if not root.is_dir():
        raise UserError(f"The dataset folder {root} does not exist.", hint="Pass the folder holding the images.")
    profile = load_character(root)
    edits = args.trigger is not None or args.add_feature or args.remove_feature or args.never or args.allow
    if args.trigger is not None:
        word = args.trigger.strip()
        if "," in word:
            raise UserError(f"The trigger word {word!r} contains a comma; a trigger is one tag.")
        profile.trigger = word
    profile.remove_features(_split_tags(args.remove_feature))
    profile.add_features(_split_tags(args.add_feature))
    profile.remove_never(_split_tags(args.allow))
    profile.add_never(_split_tags(args.never))
    written = save_character(root, profile) if edits else False
    if args.json:
        _emit({"root": root.as_posix(), "path": profile_path(root).as_posix(), "written": written,
               "trigger": profile.trigger, "features": profile.features, "never_add": profile.never_add})
        return 0
    if written:
        print(f"Saved {profile_path(root)}.")
    print(f"trigger:   {profile.trigger or '(none)'}")
    print(f"features:  {', '.join(profile.features) or '(none)'}")
    print(f"never add: {', '.join(profile.never_add) or '(none)'}")
    if profile.is_empty:
        print("No profile yet: pruning suggested features on the Tags screen records them, or use "
              "--add-feature / --never / --trigger.")
    return 0


_edit = _writing(_edit_impl, validate=_edit_ops)


def _undo_redo(args: argparse.Namespace, ds: Dataset, redo: bool) -> int:
    change = ds.redo() if redo else ds.undo()
    name = "redo" if redo else "undo"
    if change is None:
        if args.json:
            _emit({"root": ds.root.as_posix(), "action": name, "change": None, "written": []})
        else:
            print(f"Nothing to {name}.")
        return 1
    report = ds.save(force=getattr(args, "force", False))
    _warn(ds)
    rows = _change_rows(ds, change) if change.kind == "tags" else []
    if not redo:  # show what the undo did, not what the original edit did
        for row in rows:
            row["removed"], row["added"] = row["added"], row["removed"]
            row["before"], row["after"] = row["after"], row["before"]
    skipped = change.extra.get("skipped", [])
    if args.json:
        _emit({
            "root": ds.root.as_posix(), "action": name, "change": _entry(change, "undone" if not redo else "done"),
            "written": [_rel(ds, ds.image(k).caption_path) for k in report.written], "skipped": skipped,
        })
        return 0
    print(f"{name}: {change.label} ({len(report.written)} caption(s) written)")
    if skipped:
        print(f"  {len(skipped)} image(s) left alone: changed since this edit ({', '.join(skipped[:5])})")
    _print_rows(rows, limit=20)
    return 0


@_writing
def _undo(args: argparse.Namespace, ds: Dataset) -> int:
    return _undo_redo(args, ds, redo=False)


@_writing
def _redo(args: argparse.Namespace, ds: Dataset) -> int:
    return _undo_redo(args, ds, redo=True)


def _entry(change: Change, state: str) -> dict[str, Any]:
    return {
        "id": change.id,
        "label": change.label,
        "kind": change.kind,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(change.time)),
        "images": len(change.after) if change.kind == "tags" else 1,
        "state": state,
    }


def _history(args: argparse.Namespace) -> int:
    ds = _open(args)
    entries = [_entry(c, "done") for c in ds.history]
    _warn(ds)
    entries += [_entry(c, "undone") for c in reversed(ds.redo_stack)]
    if args.json:
        _emit({"root": ds.root.as_posix(), "entries": entries, "can_undo": ds.can_undo, "can_redo": ds.can_redo})
        return 0
    if not entries:
        print("No edits recorded.")
    for e in entries:
        mark = " " if e["state"] == "done" else "~"
        print(f"{mark}{e['id']:4}  {e['time']}  {e['label']}  ({e['images']} image(s))"
              + ("  [undone]" if e["state"] == "undone" else ""))
    return 0


@_writing
def _repeats(args: argparse.Namespace, ds: Dataset) -> int:
    old = ds.folder(args.folder).name
    change = ds.set_repeats(args.folder, args.count)
    _warn(ds)
    new = change.extra.get("new", old)
    if args.json:
        _emit({"root": ds.root.as_posix(), "old": old, "new": new, "changed": new != old})
    else:
        print(f"Renamed {old} -> {new}" if new != old else f"{old} already has {args.count} repeats")
    return 0


@_writing
def _trash(args: argparse.Namespace, ds: Dataset) -> int:
    for key in args.keys:  # check every key first: all or nothing
        ds.image(key)
    moved = []
    for key in args.keys:
        change = ds.trash(key)
        moved.append({"key": key, "image": change.extra.get("image"), "caption": change.extra.get("caption")})
    _warn(ds)
    if args.json:
        _emit({"root": ds.root.as_posix(), "trashed": moved})
    else:
        for m in moved:
            print(f"Trashed {m['key']} -> {m['image']}")
    return 0


@_writing
def _revert(args: argparse.Namespace, ds: Dataset) -> int:
    report = ds.revert_all()
    _warn(ds)
    restored = [_rel(ds, ds.image(k).caption_path) for k in report.restored]
    if args.json:
        _emit({"root": ds.root.as_posix(), "restored": restored, "removed": report.removed})
        return 0
    print(f"Reverted {len(restored)} caption(s) to their originals; "
          f"{len(report.removed)} caption(s) kazari had created moved to .kazari/trash/.")
    return 0
