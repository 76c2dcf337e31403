import os
from pathlib import Path

import pytest
from PIL import Image

from tagging.dataset import Dataset, parse_folder_name
from tagging.errors import DatasetError


def _tree_snapshot(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_open_kohya_layout(small_dataset: Path) -> None:
    ds = Dataset.open(small_dataset)
    assert [f.name for f in ds.folders] == ["3_kazari casual", "10_kazari"]
    casual, main = ds.folders
    assert (main.repeats, main.trigger, main.class_tokens) == (10, "kazari", "kazari")
    assert (casual.repeats, casual.trigger, casual.class_tokens) == (3, "kazari", "kazari casual")
    assert [i.key for i in ds.images] == [
        "3_kazari casual/101.jpg", "10_kazari/001.png", "10_kazari/002.png", "10_kazari/003.png",
    ]
    item = ds.image("10_kazari/003.png")
    assert item.tags == ["1girl", "kazari", "pink_hair", "blonde_hair", "open_mouth"]
    assert item.folder is main and item.caption_exists and not item.has_changes
    assert item.caption_path == small_dataset / "10_kazari" / "003.txt"
    assert item.size == (32, 32)
    assert ds.skipped == []


def test_parse_folder_name_like_sd_scripts() -> None:
    assert parse_folder_name("10_kazari girl") == (10, "kazari girl")
    assert parse_folder_name("5_a_b") == (5, "a_b")
    assert parse_folder_name("7") == (7, "")
    assert parse_folder_name("kazari") is None
    assert parse_folder_name("x_10") is None


def test_every_skip_is_reported_with_a_reason(make_dataset) -> None:
    root = make_dataset({
        "10_kazari": {"a.png": "kazari", "b.png": None, "c.PNG": "kazari"},
        "images": {"x.png": "tag"},
        "0_empty": {"y.png": "tag"},
        "10_kazari/nested": {"z.png": "tag"},
        "": {"stray.png": "tag"},
    })
    (root / "10_kazari" / "orphan.txt").write_text("lonely", encoding="utf-8")
    (root / "10_kazari" / "anim.gif").write_bytes(b"GIF89a")
    ds = Dataset.open(root)
    codes = {(s.code, s.path.name) for s in ds.skipped}
    assert codes == {
        ("folder-unnumbered", "images"),
        ("folder-zero-repeats", "0_empty"),
        ("folder-nested", "nested"),
        ("image-at-root", "stray.png"),
        ("caption-missing", "b.png"),
        ("caption-orphan", "orphan.txt"),
        ("image-unsupported", "anim.gif"),
    }
    assert all(s.reason for s in ds.skipped)
    # Upper-case extensions are images too; the caption-less image is still a training image.
    assert [i.key for i in ds.images] == ["10_kazari/a.png", "10_kazari/b.png", "10_kazari/c.PNG"]


def test_plain_folder_and_reg_root(make_dataset) -> None:
    root = make_dataset({"": {"a.webp": "x, y", "b.bmp": "z"}}, name="plain")
    reg = make_dataset({"1_girl": {"r.png": "1girl"}}, name="reg")
    ds = Dataset.open(root, reg_root=reg)
    assert len(ds.folders) == 1 and ds.folders[0].plain and ds.folders[0].repeats == 1
    assert [i.key for i in ds.images] == ["a.webp", "b.bmp"]
    assert [f.name for f in ds.reg_folders] == ["1_girl"] and ds.reg_folders[0].is_reg
    assert ds.image("@reg/1_girl/r.png").tags == ["1girl"]
    assert len(ds.images) == 2 and len(ds.all_images) == 3


def test_caption_extension_is_configurable(make_dataset) -> None:
    root = make_dataset({"2_a": {"a.png": "x, y"}}, caption_ext=".caption")
    assert Dataset.open(root).images[0].caption_exists is False
    ds = Dataset.open(root, caption_ext="caption")
    assert ds.caption_ext == ".caption" and ds.images[0].tags == ["x", "y"]


def test_sizes_come_from_headers_not_decoding(make_dataset, monkeypatch) -> None:
    root = make_dataset({"1_a": {f"{i}.png": "x" for i in range(5)}}, size=(64, 48))
    calls = []
    real_load = Image.Image.load

    def counting_load(self):  # noqa: ANN001, ANN202
        calls.append(1)
        return real_load(self)

    monkeypatch.setattr(Image.Image, "load", counting_load)
    ds = Dataset.open(root)
    assert calls == []  # opening decodes nothing
    assert [i.size for i in ds.images] == [(64, 48)] * 5
    assert calls == []  # sizes read from headers only


def test_non_utf8_binary_and_unreadable_captions_are_reported_not_fatal(make_dataset) -> None:
    root = make_dataset({"1_a": {
        "a.png": "café, x".encode("latin-1"),
        "b.png": b"\x89PNG\x00\x00binary junk",
        "c.png": "ok",
    }})
    ds = Dataset.open(root)
    a, b, c = ds.images
    assert a.caption_error and "a.txt" in a.caption_error and "UTF-8" in a.caption_error
    assert b.caption_error and "b.txt" in b.caption_error
    assert c.caption_error is None and c.tags == ["ok"]


def test_bad_roots_give_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="does not exist"):
        Dataset.open(tmp_path / "nope")
    f = tmp_path / "file.txt"
    f.write_text("x")
    with pytest.raises(DatasetError, match="is a file, not a folder"):
        Dataset.open(f)
    with pytest.raises(DatasetError, match="Caption extension"):
        Dataset.open(tmp_path, caption_ext=".png")


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root ignores permissions")
def test_permission_denied_caption_is_reported(make_dataset) -> None:
    root = make_dataset({"1_a": {"a.png": "x"}})
    cap = root / "1_a" / "a.txt"
    cap.chmod(0)
    try:
        ds = Dataset.open(root)
        assert ds.images[0].caption_error and "a.txt" in ds.images[0].caption_error
    finally:
        cap.chmod(0o644)


def test_non_ascii_and_space_paths_and_opening_modifies_nothing(make_dataset) -> None:
    root = make_dataset({"10_かざり girl": {"画像 1.png": "kazari, 1girl", "图片.jpg": "kazari"}}, name="数据 集")
    before = _tree_snapshot(root)
    ds = Dataset.open(root)
    assert sorted(i.key for i in ds.images) == sorted(["10_かざり girl/画像 1.png", "10_かざり girl/图片.jpg"])
    assert ds.folders[0].trigger == "かざり"
    assert _tree_snapshot(root) == before
    assert not (root / ".kazari").exists()


def test_broken_image_does_not_break_open(make_dataset) -> None:
    root = make_dataset({"1_a": {"a.png": "x"}})
    (root / "1_a" / "broken.png").write_bytes(b"not an image at all")
    ds = Dataset.open(root)
    assert ds.image("1_a/broken.png").size == (0, 0)


def test_empty_root_opens_with_no_images(tmp_path: Path) -> None:
    ds = Dataset.open(tmp_path)
    assert ds.images == [] and ds.folders == []


def test_unreadable_caption_is_reported_even_as_root(make_dataset) -> None:
    root = make_dataset({"1_a": {"a.png": None, "b.png": "x"}})
    (root / "1_a" / "a.txt").mkdir()  # unreadable as a file whatever the user's privileges
    ds = Dataset.open(root)
    item = ds.image("1_a/a.png")
    assert item.caption_error and "a.txt" in item.caption_error and item.tags == []
    assert ds.image("1_a/b.png").tags == ["x"]


def test_opening_an_n_name_folder_itself_warns_that_repeats_are_lost(make_dataset) -> None:
    root = make_dataset({"10_kazari": {"a.png": "kazari"}})
    ds = Dataset.open(root / "10_kazari")
    assert ds.folders[0].plain and ds.folders[0].repeats == 1
    assert len(ds.warnings) == 1 and "10 repeats" in ds.warnings[0] and "parent folder" in ds.warnings[0]
    ds.reload()
    assert len(ds.warnings) == 1
    assert Dataset.open(root).warnings == []
