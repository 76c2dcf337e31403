"""`kazari demo`: creates a complete workspace; re-running reuses it without rewriting anything."""

from __future__ import annotations

from pathlib import Path

from tui.cli import main


def _snapshot(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}


def test_demo_creates_a_usable_workspace_and_reuses_it(tmp_path: Path, capsys) -> None:
    root = tmp_path / "kazari-demo"
    assert main(["demo", str(root), "--no-open"]) == 0
    assert "workspace ready" in capsys.readouterr().err

    from tagging.dataset import Dataset
    from trainer.config import load_config
    from trainer.config.derived import derived_figures
    from tui.workspace import resolve_workspace

    cfg = load_config(root / "kazari.toml")
    assert Path(cfg.model.pretrained_model) == (root / "models" / "tiny-sd").resolve()
    assert cfg.sample.sample_prompts
    ds = Dataset.open(root / "dataset")
    assert len(ds.images) == 24 and ds.folders[0].trigger == "kazari"
    assert any("blonde_hair" in img.tags for img in ds.images)  # deliberate mistakes to fix
    assert (root / "models" / "tagger" / "model.onnx").is_file()
    assert (root / "models" / "tiny-sd" / "model_index.json").is_file()
    figures = derived_figures(cfg, ds)
    assert figures.total_steps == 24 * 2 * 2  # 24 images x 2 repeats x 2 epochs, batch 1
    ws = resolve_workspace(root)
    assert ws.config_path == root / "kazari.toml" and ws.dataset_root == (root / "dataset").resolve()
    assert ws.tagger_dir == root / "models" / "tagger"

    before = _snapshot(root)
    (root / "kazari.toml").write_text((root / "kazari.toml").read_text() + "# my edit\n")
    edited = (root / "kazari.toml").stat().st_mtime_ns
    assert main(["demo", str(root), "--no-open"]) == 0
    after = _snapshot(root)
    after.pop("kazari.toml")
    before.pop("kazari.toml")
    assert after == before  # nothing re-created or rewritten
    assert (root / "kazari.toml").stat().st_mtime_ns == edited
    assert (root / "kazari.toml").read_text().endswith("# my edit\n")
