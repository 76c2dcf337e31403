import json
from pathlib import Path

import pytest

from tagging.dataset import Dataset
from tagging.edits import (
    AddTag,
    Chain,
    DropPattern,
    MoveToEnd,
    MoveToFront,
    Normalize,
    RemoveTags,
    ReplaceTag,
    SetTags,
    SetTrigger,
    op_from_dict,
)
from tagging.errors import ConflictError, UserError

K1, K2, K3, K4 = "10_kazari/001.png", "10_kazari/002.png", "10_kazari/003.png", "3_kazari casual/101.jpg"


def _t(op, tags):
    return op.transform(list(tags), "k")


# ---- pure operations ---------------------------------------------------------------------------

def test_remove_tags_removes_every_occurrence() -> None:
    assert _t(RemoveTags(["a", "c"]), ["a", "b", "c", "a"]) == ["b"]
    assert _t(RemoveTags("b"), ["a", "b"]) == ["a"]


def test_replace_renames_in_place_and_merges_duplicates() -> None:
    assert _t(ReplaceTag("blonde_hair", "pink_hair"), ["1girl", "blonde_hair", "smile"]) == ["1girl", "pink_hair", "smile"]
    # The renamed tag already exists later: first position wins, no duplicate.
    assert _t(ReplaceTag("old", "new"), ["a", "old", "b", "new"]) == ["a", "new", "b"]
    assert _t(ReplaceTag("old", "new"), ["new", "old"]) == ["new"]
    with pytest.raises(UserError):
        ReplaceTag("a", "")


def test_add_at_front_end_and_position() -> None:
    assert _t(AddTag("x", "front"), ["a", "b"]) == ["x", "a", "b"]
    assert _t(AddTag("x"), ["a", "b"]) == ["a", "b", "x"]
    assert _t(AddTag("x", 1), ["a", "b"]) == ["a", "x", "b"]
    assert _t(AddTag("x", 99), ["a"]) == ["a", "x"]
    assert _t(AddTag("a", "front"), ["b", "a"]) == ["b", "a"]  # already there: untouched
    with pytest.raises(UserError):
        AddTag("a, b")
    with pytest.raises(UserError):
        AddTag("x", "middle")


def test_move_to_front_and_end_keep_given_order() -> None:
    assert _t(MoveToFront(["c", "a", "zz"]), ["a", "b", "c"]) == ["c", "a", "b"]
    assert _t(MoveToEnd(["a", "b"]), ["a", "b", "c"]) == ["c", "a", "b"]
    assert _t(MoveToEnd(["a"]), ["a", "b", "a"]) == ["b", "a", "a"]  # duplicates are kept, not dropped


def test_set_trigger_first_exactly_once() -> None:
    assert _t(SetTrigger("kz"), ["a", "kz", "b", "kz"]) == ["kz", "a", "b"]
    assert _t(SetTrigger("kz"), ["a"]) == ["kz", "a"]
    assert _t(SetTrigger("kz"), ["kz", "a"]) == ["kz", "a"]


def test_drop_pattern_globs() -> None:
    tags = ["white_background", "simple_background", "1girl", "hat", "hair_bow"]
    assert _t(DropPattern("*_background"), tags) == ["1girl", "hat", "hair_bow"]
    assert _t(DropPattern(["h?t", "hair_*"]), tags) == ["white_background", "simple_background", "1girl"]


def test_normalize_modes_are_explicit() -> None:
    assert _t(Normalize("underscores-to-spaces"), ["long_hair", "^_^"]) == ["long hair", "^_^"]
    assert _t(Normalize("spaces-to-underscores"), ["long hair"]) == ["long_hair"]
    assert _t(Normalize("escape-parens"), ["a_(b)"]) == [r"a_\(b\)"]
    assert _t(Normalize("unescape-parens"), [r"a_\(b\)"]) == ["a_(b)"]
    assert _t(Normalize("dedupe"), ["a", "b", "a"]) == ["a", "b"]
    with pytest.raises(UserError):
        Normalize("shout")


def test_ops_roundtrip_through_dicts() -> None:
    ops = [RemoveTags(["a"]), ReplaceTag("a", "b"), AddTag("x", 2), MoveToFront(["a"]), MoveToEnd(["b"]),
           SetTrigger("k"), DropPattern(["*_x"]), Normalize("dedupe"), Chain([RemoveTags("a"), AddTag("b")])]
    for op in ops:
        assert op_from_dict(json.loads(json.dumps(op.to_dict()))) == op


# ---- applying to a dataset ---------------------------------------------------------------------

def test_apply_to_all_subset_and_one(small_dataset: Path) -> None:
    ds = Dataset.open(small_dataset)
    change = ds.apply(RemoveTags(["solo"]))
    assert sorted(change.keys) == [K1, K2]
    assert change.before[K1] == ["kazari", "1girl", "solo", "pink_hair", "smile"]
    assert ds.image(K1).tags == ["kazari", "1girl", "pink_hair", "smile"]
    change = ds.apply(AddTag("casual"), keys=[K4])
    assert change.keys == [K4] and ds.image(K4).tags[-1] == "casual"
    assert sorted(ds.dirty_keys) == sorted([K1, K2, K4])
    with pytest.raises(UserError, match="No image"):
        ds.apply(AddTag("x"), keys=["nope.png"])


def test_noop_edit_is_not_recorded(small_dataset: Path) -> None:
    ds = Dataset.open(small_dataset)
    change = ds.apply(RemoveTags(["not_there"]))
    assert len(change) == 0 and ds.history == []


def test_tag_lists_are_replaced_never_mutated(small_dataset: Path) -> None:
    ds = Dataset.open(small_dataset)
    held = ds.image(K1).tags
    snapshot = list(held)
    ds.apply(RemoveTags(["solo"]))
    assert held == snapshot  # a reader holding the old list sees a consistent old list
    assert ds.image(K1).tags is not held


def test_settags_mapping_is_one_undoable_step(small_dataset: Path) -> None:
    ds = Dataset.open(small_dataset)
    change = ds.apply(SetTags({K1: ["kazari", "a"], K2: ["kazari", "b"]}, label="auto-tag"))
    assert sorted(change.keys) == [K1, K2] and change.label == "auto-tag"
    assert ds.image(K3).tags[0] == "1girl"  # untouched
    assert len(ds.history) == 1
    ds.undo()
    assert ds.image(K1).tags[0:3] == ["kazari", "1girl", "solo"] and ds.dirty_keys == []
    ds.apply(SetTags(["only"]), keys=[K3])
    assert ds.image(K3).tags == ["only"]


def test_undo_redo_in_memory(small_dataset: Path) -> None:
    ds = Dataset.open(small_dataset)
    ds.apply(RemoveTags(["solo"]))
    ds.apply(SetTrigger("kazari"))
    assert ds.image(K3).tags[0] == "kazari"
    assert ds.undo().label == "trigger kazari first"
    assert ds.image(K3).tags[0] == "1girl"
    assert ds.undo().label == "remove solo"
    assert ds.undo() is None
    assert ds.dirty_keys == []
    assert ds.redo().label == "remove solo"
    assert "solo" not in ds.image(K1).tags
    ds.apply(AddTag("new"))  # a new edit clears the redo stack
    assert ds.redo() is None


def test_save_writes_only_changed_files_and_keeps_originals(small_dataset: Path) -> None:
    ds = Dataset.open(small_dataset)
    cap1, cap3 = ds.image(K1).caption_path, ds.image(K3).caption_path
    mtime3 = cap3.stat().st_mtime_ns
    ds.apply(RemoveTags(["smile"]))
    report = ds.save()
    assert report.written == [K1] and report.originals_kept == [K1]
    assert cap1.read_text(encoding="utf-8") == "kazari, 1girl, solo, pink_hair\n"  # newline style kept
    assert cap3.stat().st_mtime_ns == mtime3
    assert (small_dataset / ".kazari/originals/10_kazari/001.txt").read_text() == "kazari, 1girl, solo, pink_hair, smile\n"
    assert ds.dirty_keys == [] and ds.save().written == []
    # A second change keeps the first original, not the intermediate version.
    ds.apply(RemoveTags(["solo"]))
    assert ds.save().originals_kept == [K2]  # K1 already has its original
    assert (small_dataset / ".kazari/originals/10_kazari/001.txt").read_text().endswith("smile\n")


def test_save_preserves_crlf_and_drops_bom(make_dataset) -> None:
    root = make_dataset({"1_a": {"a.png": b"\xef\xbb\xbfx, y\r\n", "b.png": b"x, y"}})
    ds = Dataset.open(root)
    ds.apply(AddTag("z"))
    ds.save()
    assert (root / "1_a/a.txt").read_bytes() == b"x, y, z\r\n"
    assert (root / "1_a/b.txt").read_bytes() == b"x, y, z"


def test_save_never_adds_or_removes_escapes_or_underscores(make_dataset) -> None:
    root = make_dataset({"1_a": {"a.png": "name_\\(series\\), long_hair, long hair\n"}})
    ds = Dataset.open(root)
    ds.apply(AddTag("x"))
    ds.save()
    assert (root / "1_a/a.txt").read_text() == "name_\\(series\\), long_hair, long hair, x\n"


def test_unreadable_captions_are_left_alone(make_dataset) -> None:
    raw = "café".encode("latin-1")
    root = make_dataset({"1_a": {"a.png": raw, "b.png": "x"}})
    ds = Dataset.open(root)
    change = ds.apply(AddTag("y"))
    assert change.keys == ["1_a/b.png"]
    ds.save()
    assert (root / "1_a/a.txt").read_bytes() == raw


def test_conflict_is_refused_then_reload_or_force(small_dataset: Path) -> None:
    ds = Dataset.open(small_dataset)
    ds.apply(RemoveTags(["solo"]))
    cap = ds.image(K1).caption_path
    cap.write_text("someone, else\n", encoding="utf-8")
    with pytest.raises(ConflictError, match="001.txt") as info:
        ds.save()
    assert info.value.keys == [K1]
    assert cap.read_text() == "someone, else\n"
    assert "solo" in ds.image(K2).caption_path.read_text()  # nothing written at all
    report = ds.save(force=True)
    assert report.overwritten_conflicts == [K1]
    assert cap.read_text() == "kazari, 1girl, pink_hair, smile\n"
    # reload picks up on-disk edits and drops unsaved ones
    cap.write_text("third, version\n", encoding="utf-8")
    ds.apply(AddTag("zzz"), keys=[K2])
    ds.reload()
    assert ds.image(K1).tags == ["third", "version"] and ds.dirty_keys == []


def test_conflict_when_caption_appears_on_disk(make_dataset) -> None:
    root = make_dataset({"1_a": {"a.png": None}})
    ds = Dataset.open(root)
    ds.apply(SetTags(["mine"]), keys=["1_a/a.png"])
    (root / "1_a/a.txt").write_text("theirs")
    with pytest.raises(ConflictError):
        ds.save()


def test_undo_and_redo_survive_a_restart(small_dataset: Path) -> None:
    ds = Dataset.open(small_dataset)
    ds.apply(RemoveTags(["solo"]))
    ds.apply(ReplaceTag("blonde_hair", "pink_hair"))
    ds.save()
    ds = Dataset.open(small_dataset)  # "restart"
    assert [c.label for c in ds.history] == ["remove solo", "replace blonde_hair -> pink_hair"]
    assert ds.undo().label == "replace blonde_hair -> pink_hair"
    assert ds.image(K3).tags == ["1girl", "kazari", "pink_hair", "blonde_hair", "open_mouth"]
    ds.save()
    ds = Dataset.open(small_dataset)
    assert [c.label for c in ds.redo_stack] == ["replace blonde_hair -> pink_hair"]
    assert ds.image(K3).caption_path.read_text() == "1girl, kazari, pink_hair, blonde_hair, open_mouth\n"
    ds.redo()
    ds.save()
    assert Dataset.open(small_dataset).image(K3).tags == ["1girl", "kazari", "pink_hair", "open_mouth"]


def test_unsaved_undo_is_not_persisted(small_dataset: Path) -> None:
    ds = Dataset.open(small_dataset)
    ds.apply(RemoveTags(["solo"]))
    ds.save()
    ds.undo()  # not saved
    assert [c.label for c in Dataset.open(small_dataset).history] == ["remove solo"]


def test_undo_skips_images_edited_outside_the_history(small_dataset: Path) -> None:
    ds = Dataset.open(small_dataset)
    ds.apply(RemoveTags(["solo"]))
    ds.save()
    ds.image(K1).caption_path.write_text("edited, elsewhere\n")
    ds = Dataset.open(small_dataset)
    change = ds.undo()
    assert change.extra["skipped"] == [K1]
    assert ds.image(K1).tags == ["edited", "elsewhere"]
    assert "solo" in ds.image(K2).tags


def test_damaged_history_line_is_ignored(small_dataset: Path) -> None:
    ds = Dataset.open(small_dataset)
    ds.apply(RemoveTags(["solo"]))
    ds.save()
    with open(small_dataset / ".kazari/history.jsonl", "a", encoding="utf-8") as fh:
        fh.write('{"event": "do", "change": {"label": "torn')  # a crash mid-append
    ds = Dataset.open(small_dataset)
    assert [c.label for c in ds.history] == ["remove solo"] and ds.warnings
    ds.apply(AddTag("later"))
    ds.save()
    assert [c.label for c in Dataset.open(small_dataset).history] == ["remove solo", "add later (end)"]


def test_set_repeats_renames_folder_and_is_undoable_after_restart(small_dataset: Path) -> None:
    ds = Dataset.open(small_dataset)
    ds.apply(RemoveTags(["smile"]))
    ds.save()
    ds.set_repeats("10_kazari", 4)
    assert (small_dataset / "4_kazari").is_dir() and not (small_dataset / "10_kazari").exists()
    assert ds.image("4_kazari/001.png").folder.repeats == 4
    with pytest.raises(UserError):
        ds.image(K1)
    with pytest.raises(UserError, match="already exists"):
        (small_dataset / "7_kazari casual").mkdir()
        ds.set_repeats("3_kazari casual", 7)
    with pytest.raises(UserError):
        ds.set_repeats("4_kazari", 0)
    ds = Dataset.open(small_dataset)
    assert ds.undo().kind == "repeats"
    assert (small_dataset / "10_kazari").is_dir()
    ds.undo()  # the tag edit, with its keys valid again
    ds.save()
    assert "smile" in (small_dataset / "10_kazari/001.txt").read_text()


def test_trash_moves_image_and_caption_and_undo_restores(small_dataset: Path) -> None:
    ds = Dataset.open(small_dataset)
    ds.apply(AddTag("unsaved"), keys=[K2])
    ds.trash(K2)
    assert not (small_dataset / "10_kazari/002.png").exists()
    assert (small_dataset / ".kazari/trash/10_kazari/002.png").exists()
    assert (small_dataset / ".kazari/trash/10_kazari/002.txt").exists()
    assert K2 not in [i.key for i in ds.images]
    ds = Dataset.open(small_dataset)  # restart: trashed image stays out, undo brings it back
    assert K2 not in [i.key for i in ds.images]
    ds.undo()
    assert (small_dataset / "10_kazari/002.png").exists()
    assert ds.image(K2).tags[-1] == "unsaved"  # the in-memory edit came back too


def test_revert_all_restores_originals_byte_for_byte(make_dataset) -> None:
    root = make_dataset({"2_a": {"a.png": b"\xef\xbb\xbf x ,y,,\r\n", "b.png": None, "c.png": "keep"}})
    ds = Dataset.open(root)
    ds.apply(AddTag("new"))
    ds.save()
    ds.apply(RemoveTags(["keep"]))
    ds.save()
    assert (root / "2_a/b.txt").exists()
    report = Dataset.open(root).revert_all()
    assert sorted(report.restored) == ["2_a/a.png", "2_a/c.png"] and report.removed == ["2_a/b.png"]
    assert (root / "2_a/a.txt").read_bytes() == b"\xef\xbb\xbf x ,y,,\r\n"
    assert (root / "2_a/c.txt").read_bytes() == b"keep"
    assert not (root / "2_a/b.txt").exists()
    assert list((root / ".kazari/trash").rglob("b*.txt"))
    ds = Dataset.open(root)
    assert ds.history == [] and ds.dirty_keys == []


def test_long_history_is_compacted_and_still_undoable(small_dataset: Path, monkeypatch) -> None:
    import tagging.history as history

    monkeypatch.setattr(history, "COMPACT_AFTER_LINES", 10)
    ds = Dataset.open(small_dataset)
    for i in range(8):
        ds.apply(AddTag(f"t{i}"), keys=[K1])
        ds.save()
    ds.undo()
    ds.save()
    lines = (small_dataset / ".kazari/history.jsonl").read_text().splitlines()
    assert len(lines) <= 10
    ds = Dataset.open(small_dataset)
    assert len(ds.history) == 7 and len(ds.redo_stack) == 1
    assert ds.redo().label == "add t7 (end)"
    assert ds.image(K1).tags[-2:] == ["t6", "t7"]


def test_history_log_size_is_capped(small_dataset: Path, monkeypatch) -> None:
    import tagging.history as history

    monkeypatch.setattr(history, "MAX_LOG_BYTES", 40_000)
    ds = Dataset.open(small_dataset)
    for i in range(30):
        ds.apply(AddTag(f"tag_{i}_" + "x" * 40))
        ds.save()
    assert (small_dataset / ".kazari/history.jsonl").stat().st_size <= 40_000
    ds = Dataset.open(small_dataset)
    assert 1 <= len(ds.history) < 30
    assert ds.history[-1].label.startswith("add tag_29_")
    ds.undo()
    assert not any(t.startswith("tag_29_") for t in ds.image(K1).tags)


def test_caption_unreadable_at_save_time_is_a_user_error_and_nothing_is_written(small_dataset: Path) -> None:
    # Works as root too: a folder where the caption was cannot be read as a file.
    ds = Dataset.open(small_dataset)
    ds.apply(RemoveTags(["solo"]))
    cap = ds.image(K1).caption_path
    cap.unlink()
    cap.mkdir()
    with pytest.raises(UserError, match="001.txt"):
        ds.save()
    assert "solo" in ds.image(K2).caption_path.read_text()


def test_undo_of_trash_never_clobbers_a_caption_written_since(small_dataset: Path) -> None:
    ds = Dataset.open(small_dataset)
    ds.trash(K2)
    cap = small_dataset / "10_kazari/002.txt"
    cap.write_text("a new caption\n")
    with pytest.raises(UserError, match="002.txt exists again"):
        ds.undo()
    assert cap.read_text() == "a new caption\n"
    assert (small_dataset / ".kazari/trash/10_kazari/002.png").exists()  # nothing moved
    assert not (small_dataset / "10_kazari/002.png").exists()


def test_trash_that_cannot_move_the_caption_leaves_the_pair_in_place(small_dataset: Path, monkeypatch) -> None:
    import shutil

    real_move = shutil.move

    def move(src, dst):
        if str(src).endswith(".txt"):
            raise PermissionError(13, "Permission denied", str(src))
        return real_move(src, dst)

    ds = Dataset.open(small_dataset)
    monkeypatch.setattr(shutil, "move", move)
    with pytest.raises(UserError, match="Cannot move"):
        ds.trash(K2)
    monkeypatch.setattr(shutil, "move", real_move)
    assert (small_dataset / "10_kazari/002.png").exists() and (small_dataset / "10_kazari/002.txt").exists()
    assert K2 in [i.key for i in ds.images] and not ds.history


def test_revert_keeps_a_copy_of_every_caption_it_overwrites(small_dataset: Path) -> None:
    ds = Dataset.open(small_dataset)
    ds.apply(RemoveTags(["solo"]))
    ds.save()
    cap = ds.image(K1).caption_path
    cap.write_text("hand, edit, made, later\n")  # not in any undo history
    report = Dataset.open(small_dataset).revert_all()
    assert K1 in report.restored and cap.read_text() == "kazari, 1girl, solo, pink_hair, smile\n"
    backup = small_dataset / ".kazari/trash/before-revert/10_kazari/001.txt"
    assert backup.read_text() == "hand, edit, made, later\n"
    assert (small_dataset / ".kazari/trash/before-revert/10_kazari/002.txt").read_text() == (
        "kazari, 1girl, pink_hair, hat\n")
