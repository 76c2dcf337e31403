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


def test_demo_prints_a_command_that_runs_from_the_shell(tmp_path: Path, capsys, monkeypatch) -> None:
    """After `make demo` kazari lives in .venv/bin, not on PATH: the hint must name that script."""
    import sys

    venv_bin = tmp_path / ".venv" / "bin"
    venv_bin.mkdir(parents=True)
    script = venv_bin / "kazari"
    script.write_text("#!/bin/sh\n")
    script.chmod(0o755)
    (tmp_path / "Makefile").write_text("open:\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    monkeypatch.setenv("MAKELEVEL", "1")
    monkeypatch.setattr(sys, "argv", [str(script), "demo"])
    from tui.demo import create_demo

    create_demo(tmp_path / "kazari-demo")  # the slow part once; main() below reuses it
    assert main(["demo", "kazari-demo", "--no-open"]) == 0
    err = capsys.readouterr().err
    assert "`.venv/bin/kazari open kazari-demo`" in err
    assert "`make open`" in err
    assert "`kazari open" not in err


def test_kazari_command_is_plain_when_the_script_is_on_path(tmp_path: Path, monkeypatch) -> None:
    from tui.commands.invocation import kazari_command

    script = tmp_path / "kazari"
    script.write_text("#!/bin/sh\n")
    script.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert kazari_command(str(script)) == "kazari"
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.chdir(tmp_path.parent)
    assert kazari_command(str(script)) == f"{tmp_path.name}/kazari"
    monkeypatch.chdir(tmp_path)
    assert kazari_command(str(script)) == "./kazari"  # a bare name would be looked up on PATH
