"""Where things live for one workbench session: workspace root, config, dataset, models, logs.

A *workspace* is a folder with a ``kazari.toml`` (what ``kazari demo`` creates); a bare dataset root
(kohya layout, ``10_name/`` folders) works too. Nothing here imports Textual, so the CLI and the
tests can resolve a workspace without starting the UI.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

CONFIG_NAME = "kazari.toml"


@dataclass(frozen=True)
class Workspace:
    root: Path
    config_path: Path | None
    dataset_root: Path | None
    tagger_dir: Path | None

    @property
    def state_dir(self) -> Path:
        return self.root / ".kazari"

    @property
    def log_path(self) -> Path:
        return self.state_dir / "logs" / "kazari.log"

    def display(self, path: Path | None) -> str:
        """A path as the UI shows it: relative to the workspace when inside it (stable in screenshots)."""
        if path is None:
            return "—"
        try:
            rel = path.resolve().relative_to(self.root.resolve())
        except ValueError:
            return str(path)
        return rel.as_posix() or "."


def looks_like_dataset(folder: Path) -> bool:
    """True when ``folder`` is a dataset root (kohya ``N_name`` folders or a plain image folder)."""
    from tagging.dataset import holds_dataset

    return holds_dataset(folder)


def no_dataset_message(root: Path) -> str:
    """What the workbench says when ``root`` holds no dataset (the same rule as ``kazari dataset``)."""
    return (
        f"No dataset in {root}: expected images, or kohya folders such as '10_name/', there or in "
        "'dataset/', or [dataset] train_data_dir in kazari.toml. Open another folder with "
        "`kazari open DATASET_ROOT`; `kazari demo` creates an example workspace."
    )


def resolve_workspace(root: Path | str | None = None, config: Path | str | None = None) -> Workspace:
    """Work out the workspace from what the user typed (``kazari open [ROOT] [--config FILE]``)."""
    root_path = Path(root or ".").expanduser().resolve()
    config_path = Path(config).expanduser().resolve() if config else None
    if config_path is None and (root_path / CONFIG_NAME).is_file():
        config_path = root_path / CONFIG_NAME
    dataset_root = _dataset_from_config(config_path)
    if dataset_root is None:
        if looks_like_dataset(root_path):
            dataset_root = root_path
        elif looks_like_dataset(root_path / "dataset"):
            dataset_root = root_path / "dataset"
    tagger_dir = root_path / "models" / "tagger"
    return Workspace(
        root=root_path,
        config_path=config_path,
        dataset_root=dataset_root,
        tagger_dir=tagger_dir if tagger_dir.is_dir() else None,
    )


def _dataset_from_config(config_path: Path | None) -> Path | None:
    value = _config_value(config_path, "dataset", "train_data_dir")
    if not isinstance(value, str) or not value or config_path is None:
        return None
    path = Path(value).expanduser()
    if not path.is_absolute():
        path = config_path.parent / path
    return path.resolve() if path.is_dir() else None


def training_resolution(config_path: Path | None) -> str | None:
    """``[dataset] resolution`` as written in the config (None when unset or unreadable)."""
    value = _config_value(config_path, "dataset", "resolution")
    if isinstance(value, list):
        value = ",".join(str(v) for v in value)
    return str(value) if isinstance(value, (str, int)) and not isinstance(value, bool) else None


def config_for_dataset(dataset_root: Path) -> Path | None:
    """The kazari.toml that trains ``dataset_root``: in the folder itself, or in its parent when
    that config's train_data_dir is this folder (the ``kazari demo`` layout)."""
    root = dataset_root.expanduser().resolve()
    own = root / CONFIG_NAME
    if own.is_file():
        return own
    parent = root.parent / CONFIG_NAME
    return parent if parent.is_file() and _dataset_from_config(parent) == root else None


def _config_value(config_path: Path | None, section: str, key: str) -> object:
    # Read single keys with tomllib: a config with errors must still open (the Config screen
    # is where the user fixes it), so full validation is not wanted here.
    if config_path is None or not config_path.is_file():
        return None
    import tomllib

    try:
        data = tomllib.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError):
        return None
    table = data.get(section)
    return table.get(key) if isinstance(table, dict) else None
