"""`kazari dataset ...` end to end (in-process through tui.cli.main), JSON contracts and exit codes."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tui.cli import main


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(["dataset", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def run_json(capsys, *argv: str) -> tuple[int, dict]:
    code, out, err = run(capsys, *argv, "--json")
    return code, json.loads(out)


def test_info_json(capsys, small_dataset: Path) -> None:
    (small_dataset / "notes").mkdir()
    code, data = run_json(capsys, "info", str(small_dataset))
    assert code == 0 and data["version"] == 1
    assert data["layout"] == "kohya" and data["caption_extension"] == ".txt"
    main_folder = next(f for f in data["folders"] if f["name"] == "10_kazari")
    assert main_folder | {"path": None} == {
        "name": "10_kazari", "path": None, "repeats": 10, "trigger": "kazari", "class_tokens": "kazari",
        "is_reg": False, "plain": False, "images": 3, "captions": 3, "missing_captions": 0, "unreadable_captions": 0,
    }
    assert data["totals"] == {"folders": 2, "images": 4, "captions": 4, "reg_images": 0, "samples_per_epoch": 33}
    assert data["skipped"] == [{"path": "notes", "code": "folder-unnumbered", "reason": data["skipped"][0]["reason"]}]


def test_info_text(capsys, small_dataset: Path) -> None:
    code, out, _ = run(capsys, "info", str(small_dataset))
    assert code == 0 and "10_kazari: 3 images x 10 repeats" in out and "33 samples per epoch" in out


def test_lint_exit_codes_and_json(capsys, make_dataset) -> None:
    clean = make_dataset({"10_kz": {"a.png": "kz, x"}}, name="clean")
    assert run(capsys, "lint", str(clean), "--min-size", "16")[0] == 0
    warn = make_dataset({"10_kz": {"a.png": "x"}}, name="warn")
    assert run(capsys, "lint", str(warn), "--min-size", "16")[0] == 0  # warnings only
    bad = make_dataset({"10_kz": {"a.png": "", "b.png": "kz"}}, name="bad")
    code, data = run_json(capsys, "lint", str(bad), "--min-size", "16")
    assert code == 1
    assert data["counts"] == {"error": 1, "warning": 0, "info": 0}
    assert data["findings"] == [{
        "code": "caption-empty", "severity": "error", "path": "10_kz/a.txt", "key": "10_kz/a.png",
        "message": data["findings"][0]["message"],
    }]
    assert run(capsys, "lint", str(bad), "--min-size", "0")[0] == 2


def test_stats_and_suggest_json(capsys, small_dataset: Path) -> None:
    code, data = run_json(capsys, "stats", str(small_dataset), "--top", "2")
    assert code == 0 and data["images"] == 4 and len(data["tags"]) == 2
    assert data["tags"][0] == {"tag": "1girl", "count": 4, "share": 1.0}
    code, data = run_json(capsys, "stats", str(small_dataset), "--where", "hat OR smile")
    assert data["images"] == 2
    code, data = run_json(capsys, "suggest", str(small_dataset))
    folder = next(f for f in data["folders"] if f["folder"] == "10_kazari")
    assert {"tag": "pink_hair", "count": 3, "share": 1.0, "category": "hair"} in folder["features"]


def test_edit_saves_and_undo_redo_history_revert(capsys, small_dataset: Path) -> None:
    cap3 = small_dataset / "10_kazari" / "003.txt"
    original = cap3.read_bytes()
    code, data = run_json(
        capsys, "edit", str(small_dataset), "--remove", "solo", "open_mouth", "--replace", "blonde_hair=pink_hair",
        "--trigger", "kazari", "--to-end", "1girl",
    )
    assert code == 0 and data["dry_run"] is False and data["selected"] == 4
    row = next(r for r in data["changed"] if r["key"] == "10_kazari/003.png")
    assert row["after"] == ["kazari", "pink_hair", "1girl"] and row["path"] == "10_kazari/003.txt"
    assert set(row["removed"]) == {"blonde_hair", "open_mouth"}
    assert "10_kazari/003.txt" in data["written"] and data["originals_kept"] == len(data["written"])
    assert cap3.read_text() == "kazari, pink_hair, 1girl\n"

    code, data = run_json(capsys, "history", str(small_dataset))
    assert [e["state"] for e in data["entries"]] == ["done"] and data["can_undo"] and not data["can_redo"]

    code, data = run_json(capsys, "undo", str(small_dataset))  # a new process: history from disk
    assert code == 0 and data["change"]["state"] == "undone" and cap3.read_bytes() == original
    assert run(capsys, "undo", str(small_dataset))[0] == 1  # nothing left to undo
    code, out, _ = run(capsys, "redo", str(small_dataset))
    assert code == 0 and "redo:" in out and cap3.read_text() == "kazari, pink_hair, 1girl\n"

    code, data = run_json(capsys, "revert", str(small_dataset))
    assert code == 0 and "10_kazari/003.txt" in data["restored"] and cap3.read_bytes() == original
    assert run_json(capsys, "history", str(small_dataset))[1]["entries"] == []


def test_edit_where_and_dry_run(capsys, small_dataset: Path) -> None:
    before = {p: p.read_bytes() for p in small_dataset.rglob("*.txt")}
    code, out, _ = run(capsys, "edit", str(small_dataset), "--add", "hat_off", "--where", "NOT hat", "--dry-run")
    assert code == 0 and "would change 3 of 3" in out
    assert {p: p.read_bytes() for p in small_dataset.rglob("*.txt")} == before
    assert not (small_dataset / ".kazari").exists()
    code, data = run_json(capsys, "edit", str(small_dataset), "--drop", "*_hair", "--where", "hat")
    assert [r["key"] for r in data["changed"]] == ["10_kazari/002.png"]


def test_edit_conflict_is_refused_with_exit_2(capsys, small_dataset: Path, monkeypatch) -> None:
    import tagging.dataset as dsmod

    real_open = dsmod.Dataset.open

    def open_then_edit_on_disk(*a, **k):  # someone edits the file between load and save
        ds = real_open(*a, **k)
        (small_dataset / "10_kazari" / "001.txt").write_text("theirs\n")
        return ds

    monkeypatch.setattr(dsmod.Dataset, "open", open_then_edit_on_disk)
    code, _, err = run(capsys, "edit", str(small_dataset), "--remove", "solo")
    assert code == 2 and "changed on disk" in err and "001.txt" in err
    assert (small_dataset / "10_kazari" / "001.txt").read_text() == "theirs\n"
    assert "solo" in (small_dataset / "10_kazari" / "002.txt").read_text()
    code, _, _ = run(capsys, "edit", str(small_dataset), "--remove", "solo", "--force")
    assert code == 0


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["info", "{missing}"], "does not exist"),
        (["info", "{file}"], "is a file"),
        (["stats", "{root}", "--where", "a AND ("], "Tag query"),
        (["edit", "{root}", "--replace", "nope"], "OLD=NEW"),
        (["edit", "{root}"], "needs at least one edit"),
        (["suggest", "{root}", "--threshold", "2"], "between 0 and 1"),
    ],
)
def test_bad_input_is_one_clear_message_exit_2(capsys, small_dataset: Path, argv, needle) -> None:
    f = small_dataset / "file.txt"
    f.write_text("x")
    subs = {"{missing}": str(small_dataset / "nope"), "{file}": str(f), "{root}": str(small_dataset)}
    before = {p: p.read_bytes() for p in small_dataset.rglob("*") if p.is_file()}
    code, out, err = run(capsys, *[subs.get(a, a) for a in argv])
    assert code == 2 and needle in err and "Traceback" not in err and err.startswith("kazari: ")
    assert {p: p.read_bytes() for p in small_dataset.rglob("*") if p.is_file()} == before


def test_real_process_with_non_ascii_path_and_c_locale(make_dataset) -> None:
    root = make_dataset({"10_かざり": {"画像 1.png": "かざり, 1girl"}}, name="数据 集")
    env = {"LC_ALL": "C", "PYTHONIOENCODING": "ascii", "PATH": "/usr/bin:/bin"}
    proc = subprocess.run(
        [sys.executable, "-m", "tui.cli", "dataset", "info", str(root)],
        capture_output=True, text=True, env=env, cwd=Path(__file__).resolve().parents[1],
    )
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr and "1 training images" in proc.stdout
    proc = subprocess.run(
        [sys.executable, "-m", "tui.cli", "dataset", "lint", str(root / "missing")],
        capture_output=True, text=True, env=env, cwd=Path(__file__).resolve().parents[1],
    )
    assert proc.returncode == 2 and "does not exist" in proc.stderr and "Traceback" not in proc.stderr


def test_repeats_and_trash_commands_are_undoable(capsys, small_dataset: Path) -> None:
    code, data = run_json(capsys, "repeats", str(small_dataset), "10_kazari", "5")
    assert code == 0 and data == {"version": 1, "root": data["root"], "old": "10_kazari", "new": "5_kazari",
                                  "changed": True}
    assert (small_dataset / "5_kazari").is_dir()
    code, data = run_json(capsys, "trash", str(small_dataset), "5_kazari/001.png")
    assert data["trashed"] == [{"key": "5_kazari/001.png", "image": ".kazari/trash/5_kazari/001.png",
                                "caption": ".kazari/trash/5_kazari/001.txt"}]
    assert not (small_dataset / "5_kazari/001.png").exists()
    assert run(capsys, "trash", str(small_dataset), "5_kazari/002.png", "nope.png")[0] == 2
    assert (small_dataset / "5_kazari/002.png").exists()  # all or nothing
    assert run(capsys, "undo", str(small_dataset))[0] == 0
    assert (small_dataset / "5_kazari/001.png").exists() and (small_dataset / "5_kazari/001.txt").exists()
    assert run(capsys, "undo", str(small_dataset))[0] == 0
    assert (small_dataset / "10_kazari/001.png").exists()


def test_edit_of_a_1mb_caption_reports_the_exact_diff(capsys, make_dataset) -> None:
    # 150,000 tags: the per-file diff must stay linear (it used to take minutes here).
    tags = [f"tag{i}" for i in range(150_000)]
    root = make_dataset({"1_a": {"a.png": ", ".join(tags) + "\n"}})
    code, data = run_json(capsys, "edit", str(root), "--trigger", "kazari", "--remove", "tag7")
    assert code == 0
    row = data["changed"][0]
    assert row["removed"] == ["tag7"] and row["added"] == ["kazari"]
    text = (root / "1_a/a.txt").read_text()
    assert text.startswith("kazari, tag0, tag1, tag2, tag3, tag4, tag5, tag6, tag8,") and text.endswith("tag149999\n")


def test_lint_small_image_threshold_comes_from_the_config(capsys, make_dataset, tmp_path: Path) -> None:
    from PIL import Image

    root = make_dataset({"10_kz": {"a.png": "kz, x"}}, name="ds")
    Image.new("RGB", (300, 300), "white").save(root / "10_kz" / "a.png")

    def small(*extra: str) -> bool:
        code, data = run_json(capsys, "lint", str(root), "--no-images", *extra)
        return any(f["code"] == "image-small" for f in data["findings"])

    assert not small()  # no config: sd-scripts' 256
    (root.parent / "kazari.toml").write_text(f'[dataset]\ntrain_data_dir = "{root.name}"\nresolution = "768,768"\n')
    assert small()  # 300 px is below half of 768
    assert not small("--min-size", "256")  # an explicit threshold wins
    other = tmp_path / "other.toml"
    other.write_text('[dataset]\nresolution = "512,512"\n')
    assert not small("--config", str(other))
    assert run(capsys, "lint", str(root), "--config", str(tmp_path / "missing.toml"))[0] == 2
