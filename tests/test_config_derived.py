"""Derived figures: images, repeats, buckets, steps (counted per bucket) and time."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from tagging.dataset import Dataset
from trainer.config import derived_figures, preset
from trainer.config.derived import balanced_reg_repeats
from trainer.durations import format_duration


def images(folder: Path, sizes: list[tuple[int, int]]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i, size in enumerate(sizes):
        Image.new("RGB", size, (10 * i, 20, 30)).save(folder / f"{i}.png")
        (folder / f"{i}.txt").write_text("kazari, 1girl")


def dataset(tmp_path: Path, reg: bool = False) -> Path:
    root = tmp_path / "data"
    images(root / "10_kazari", [(768, 768), (768, 768), (512, 768)])
    images(root / "5_extra", [(1200, 600)])
    if reg:
        images(tmp_path / "reg" / "1_girl", [(512, 512), (512, 512)])
    return root


def test_figures_per_folder_bucket_and_step(tmp_path: Path) -> None:
    root = dataset(tmp_path)
    cfg = preset("anime-character", dataset={"train_data_dir": root}, training={"train_batch_size": 4})
    fig = derived_figures(cfg)
    by_name = {f.name: f for f in fig.folders}
    assert (by_name["10_kazari"].images, by_name["10_kazari"].repeats, by_name["10_kazari"].samples) == (3, 10, 30)
    assert (by_name["5_extra"].images, by_name["5_extra"].samples) == (1, 5)
    assert fig.train_images == 4 and fig.reg_images == 0 and fig.samples_per_epoch == 35
    assert fig.buckets == {(640, 896): 10, (768, 768): 20, (1024, 512): 5}
    # batches never mix buckets: 3 + 5 + 2 = 10, where 35 / 4 alone would say 9
    assert fig.batches_per_epoch == 10 and fig.naive_steps_per_epoch == 9
    assert fig.steps_per_epoch == 10 and fig.total_steps == 100 and fig.estimated_seconds is None


def test_reg_images_are_balanced_and_accumulation_divides_steps(tmp_path: Path) -> None:
    root = dataset(tmp_path, reg=True)
    cfg = preset("anime-character", dataset={"train_data_dir": root, "reg_data_dir": tmp_path / "reg"},
                 training={"train_batch_size": 4, "gradient_accumulation_steps": 2})
    fig = derived_figures(cfg, seconds_per_step=1.5)
    reg = [f for f in fig.folders if f.is_reg]
    assert reg[0].images == 2 and reg[0].samples == 35  # as many reg samples as training samples
    assert fig.reg_images == 2 and fig.samples_per_epoch == 70
    assert fig.buckets[(768, 768)] == 55
    assert fig.batches_per_epoch == 14 + 3 + 2
    assert fig.steps_per_epoch == 10 and fig.total_steps == 100
    assert fig.estimated_seconds == 150.0
    assert any("estimated time: 2m 30s" in line for line in fig.lines())


def test_accepts_an_open_dataset_and_no_bucket_mode(tmp_path: Path) -> None:
    root = dataset(tmp_path)
    ds = Dataset.open(root)
    cfg = preset("anime-character", dataset={"train_data_dir": root, "enable_bucket": False})
    fig = derived_figures(cfg, ds)
    assert fig.buckets == {(768, 768): 35}
    assert fig.batches_per_epoch == 18  # ceil(35 / 2)
    data = fig.to_json()
    assert data["buckets"] == [{"resolution": [768, 768], "count": 35}]
    assert {f["name"]: f["path"] for f in data["folders"]}["10_kazari"].endswith("data/10_kazari")


def test_sd_scripts_reg_balancing() -> None:
    assert balanced_reg_repeats([1, 1], 35) == [18, 17]
    assert balanced_reg_repeats([10, 10], 5) == [10, 0]  # more reg than train: the rest is unused
    assert balanced_reg_repeats([], 10) == []


def test_duration_format() -> None:
    assert format_duration(42) == "42s" and format_duration(150) == "2m 30s"
    assert format_duration(3 * 3600 + 61) == "3h 01m 01s"
    # One formatter serves the CLI progress (clock), the Train screen (short) and the figures (long).
    assert format_duration(3 * 3600 + 61, "clock") == "3:01:01" and format_duration(75, "clock") == "1:15"
    assert format_duration(3 * 3600 + 61, "short") == "3h01m" and format_duration(75, "short") == "1m15s"
    assert format_duration(None) == "?" and format_duration(float("nan"), unknown="—") == "—"
