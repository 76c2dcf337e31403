import io
from pathlib import Path

from PIL import Image

from tagging.dataset import Dataset
from tagging.lint import CODES, DEFAULT_MIN_SIZE, ERROR, Finding, has_errors, lint, min_size_for_resolution
from tagging.synthetic import make_character_dataset


def _codes(findings: list[Finding], name: str | None = None) -> set[str]:
    return {f.code for f in findings if name is None or f.path.name == name}


def test_caption_checks(make_dataset) -> None:
    root = make_dataset({"10_kz": {
        "empty.png": "",
        "blank.png": " , ,\n",
        "latin.png": "café".encode("latin-1"),
        "dup.png": "kz, a, b, a",
        "notfirst.png": "a, kz",
        "missing.png": "a, b",
        "bom.png": b"\xef\xbb\xbfkz, a",
        "multi.png": "kz, a\nb, c",
        "escaped.png": "kz, name_\\(series\\), ^_^",
        "weights.png": "kz, (masterpiece:1.2), <lora:x:1>",
        "long.png": "kz, " + ", ".join(f"t{i}" for i in range(2000)),
        "ok.png": "kz, 1girl",
    }})
    findings = lint(Dataset.open(root), check_images=False)
    assert _codes(findings, "empty.txt") == {"caption-empty"}
    assert _codes(findings, "blank.txt") == {"caption-empty"}
    assert _codes(findings, "latin.txt") == {"caption-encoding"}
    assert _codes(findings, "dup.txt") == {"tag-duplicate"}
    assert _codes(findings, "notfirst.txt") == {"trigger-not-first"}
    assert _codes(findings, "missing.txt") == {"trigger-missing"}
    assert _codes(findings, "bom.txt") == {"caption-bom"}
    assert _codes(findings, "multi.txt") == {"caption-multiline"}
    assert _codes(findings, "escaped.txt") == {"tag-escaped"}  # the kaomoji is not flagged
    assert _codes(findings, "weights.txt") == {"tag-prompt-syntax"}
    assert _codes(findings, "long.txt") == {"caption-long"}
    assert _codes(findings, "ok.txt") == set()
    assert has_errors(findings)
    dup = next(f for f in findings if f.code == "tag-duplicate")
    assert "dup.txt" in dup.message and "a" in dup.message and dup.key == "10_kz/dup.png"


def test_trigger_override_and_reg_folders_are_not_trigger_checked(make_dataset) -> None:
    root = make_dataset({"10_kz": {"a.png": "other, x"}}, name="main")
    reg = make_dataset({"1_girl": {"r.png": "1girl"}}, name="reg")
    ds = Dataset.open(root, reg_root=reg)
    assert _codes(lint(ds, check_images=False, min_size=16)) == {"trigger-missing"}
    assert _codes(lint(ds, check_images=False, min_size=16, trigger="other")) == set()


def test_skipped_entries_become_findings(make_dataset) -> None:
    root = make_dataset({"images": {"x.png": "t"}, "0_z": {"y.png": "t"}, "1_a": {"a.png": None}})
    (root / "1_a" / "b.txt").write_text("orphan")
    codes = _codes(lint(Dataset.open(root), check_images=False))
    assert {"folder-unnumbered", "folder-zero-repeats", "caption-missing", "caption-orphan"} <= codes


def test_shared_caption_and_empty_dataset(make_dataset, tmp_path: Path) -> None:
    root = make_dataset({"1_a": {"a.png": "x", "a.jpg": "x"}})
    assert "caption-shared" in _codes(lint(Dataset.open(root), check_images=False))
    empty = tmp_path / "empty"
    empty.mkdir()
    assert _codes(lint(Dataset.open(empty))) == {"dataset-empty"}


def test_image_checks_small_corrupt_truncated(make_dataset) -> None:
    root = make_dataset({"1_a": {"small.png": "x", "big.png": "x"}})
    # Noise, not flat colour: flat images all share one perceptual hash.
    Image.effect_noise((100, 300), 60).convert("RGB").save(root / "1_a" / "small.png")
    Image.effect_noise((300, 300), 60).convert("RGB").save(root / "1_a" / "big.png")
    (root / "1_a" / "junk.png").write_bytes(b"this is not a png")
    (root / "1_a" / "junk.txt").write_text("x")
    buf = io.BytesIO()
    Image.effect_noise((256, 256), 50).convert("RGB").save(buf, "PNG")
    (root / "1_a" / "cut.png").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    (root / "1_a" / "cut.txt").write_text("x")
    findings = lint(Dataset.open(root), min_size=256)
    assert _codes(findings, "small.png") == {"image-small"}
    assert _codes(findings, "big.png") == set()
    assert _codes(findings, "junk.png") == {"image-corrupt"}
    assert _codes(findings, "cut.png") == {"image-truncated"}
    header_only = lint(Dataset.open(root), min_size=256, check_images=False)
    assert _codes(header_only, "small.png") == {"image-small"} and _codes(header_only, "cut.png") == set()


def test_near_duplicates_found_but_distinct_drawings_are_not(tmp_path: Path) -> None:
    root = make_character_dataset(tmp_path / "ds", n_images=16, size=128)
    folder = root / "10_kazari"
    src = Image.open(folder / "0003.png").convert("RGB")
    src.resize((src.width * 3 // 4, src.height * 3 // 4)).save(folder / "copy.jpg", quality=70)
    (folder / "copy.txt").write_text("kazari, 1girl")
    findings = [f for f in lint(Dataset.open(root), min_size=64) if f.code == "image-near-duplicate"]
    assert [f.path.name for f in findings] == ["copy.jpg"]
    assert "0003.png" in findings[0].message


def test_codes_are_stable_and_severities_consistent(tmp_path: Path) -> None:
    root = make_character_dataset(tmp_path / "ds", n_images=12, size=64, empty_caption=True)
    findings = lint(Dataset.open(root), min_size=32)
    for f in findings:
        assert CODES[f.code] == f.severity
    assert {f.code for f in findings} == {"trigger-missing", "tag-duplicate", "caption-empty"}
    assert [f.severity for f in findings if f.code == "caption-empty"] == [ERROR]
    d = findings[0].to_dict(root)
    assert set(d) == {"code", "severity", "path", "key", "message"} and not d["path"].startswith("/")


def test_feature_left_in_captions_after_pruning_is_reported(tmp_path):
    from tagging.character import record_pruned
    from tagging.dataset import Dataset
    from tagging.lint import lint

    folder = tmp_path / "10_kazari"
    folder.mkdir()
    from PIL import Image

    for i, caption in enumerate(["kazari, pink_hair, smile", "kazari, smile", "kazari, Pink Hair"]):
        Image.new("RGB", (300, 300)).save(folder / f"{i}.png")
        (folder / f"{i}.txt").write_text(caption)
    assert not [f for f in lint(Dataset.open(tmp_path), check_images=False) if f.code == "feature-present"]
    record_pruned(tmp_path, ["pink_hair"])
    found = [f for f in lint(Dataset.open(tmp_path), check_images=False) if f.code == "feature-present"]
    assert len(found) == 1 and "feature tag pink_hair present in 2 captions" in found[0].message


def test_small_image_threshold_is_half_the_training_resolution() -> None:
    assert min_size_for_resolution("768,768") == 384
    assert min_size_for_resolution("512,768") == 256  # the short side counts
    assert min_size_for_resolution(None) == DEFAULT_MIN_SIZE == 256
    assert min_size_for_resolution("not,a size") == DEFAULT_MIN_SIZE
