"""State shared by the screens of one workbench session (dataset, config, tagger results, training).

Views stay thin: they call the domain objects held here and redraw. Loading is lazy so opening the
app never waits for a big dataset or a model.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tagging.errors import UserError
from tui.logcapture import LogSink
from tui.workspace import Workspace

LINT_IN_PROCESS_ABOVE = 500  # images; below this lint is quicker than starting a process
# A save in the TUI waits this long for another writer (the CLI, a second TUI) before saying who it is.
TUI_LOCK_WAIT_S = 1.5


class LinkedEvent(threading.Event):
    """A cancel flag that also reads as set once ``parent`` is (the app exiting)."""

    def __init__(self, parent: threading.Event) -> None:
        super().__init__()
        self.parent = parent

    def is_set(self) -> bool:
        return super().is_set() or self.parent.is_set()


@dataclass
class Session:
    workspace: Workspace
    sink: LogSink
    image_mode: str = "halfcell"
    dataset: Any = None  # tagging.dataset.Dataset once loaded
    dataset_error: str | None = None
    findings: list[Any] = field(default_factory=list)  # tagging.lint.Finding of the loaded dataset
    lint_error: str | None = None  # why the last lint failed (its findings are then unknown, not none)
    loading: bool = False
    config: Any = None  # trainer.config.ConfigDocument once opened
    tag_scores: Any = None  # cached tagger output, re-thresholded without re-running the model
    last_grid: Any = None
    chosen_lora: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    image_server: Any = None  # tui.image_share.ImageServer, started on the first shared image
    # Set when the app exits: background jobs (lint, tagger, grid) stop instead of holding the exit.
    stop_event: threading.Event = field(default_factory=threading.Event)

    def load_dataset(self) -> Any:
        """Open the dataset (blocking: call from a thread worker). Raises UserError on bad input."""
        from tagging.dataset import Dataset
        from tagging.errors import DatasetError

        if self.workspace.dataset_root is None:
            from tui.workspace import no_dataset_message

            raise DatasetError(no_dataset_message(self.workspace.root))
        try:
            ds = Dataset.open(self.workspace.dataset_root)
        except DatasetError as err:
            self.dataset_error = str(err)
            raise
        ds.lock_wait = TUI_LOCK_WAIT_S
        self.dataset = ds
        self.dataset_error = None
        return ds

    def run_lint(self, ds: Any) -> list[Any]:
        """Lint the dataset as loaded. Big sets are linted in a separate process: lint decodes every
        image, and in a thread of this process it would compete with the UI for the GIL."""
        min_size = self.lint_min_size()
        if len(ds.images) < LINT_IN_PROCESS_ABOVE:
            from tagging.lint import lint

            return list(lint(ds, min_size=min_size))
        import pickle
        import subprocess
        import sys

        # A plain child process: multiprocessing would touch sys.stderr, which Textual replaces.
        cmd = [sys.executable, "-m", "tui.lint_worker", str(ds.root), ds.caption_ext, str(ds.reg_root or ""),
               str(min_size)]
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            while True:  # short waits, so quitting the app (stop_event) never waits for lint
                if self.stop_event.is_set():
                    return []
                try:
                    out, err = proc.communicate(timeout=0.25)
                    break
                except subprocess.TimeoutExpired:
                    continue
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        if proc.returncode != 0:
            tail = err.decode("utf-8", "replace").strip().splitlines()[-1:] or ["no output"]
            raise RuntimeError(f"lint process failed ({proc.returncode}): {tail[0]}")
        return pickle.loads(out)  # our own child's output, not user data

    def lint_min_size(self) -> int:
        """The image-small threshold from the training resolution: the config being edited when it
        is open (and reads), else the workspace config file, else the default."""
        from tagging.lint import min_size_for_resolution
        from tui.workspace import training_resolution

        resolution = None
        if self.config is not None:
            try:
                resolution = self.config.resolved_config().dataset.resolution
            except Exception:  # noqa: BLE001 - a config with errors lints with the file's value
                resolution = None
        if resolution is None:
            resolution = training_resolution(self.workspace.config_path)
        return min_size_for_resolution(resolution)

    def share_image(self, path: Path) -> str:
        """Serve ``path`` on the session's 127.0.0.1 image server; returns its URL."""
        from tui.image_share import ImageServer

        if self.image_server is None:
            self.image_server = ImageServer()
        return self.image_server.share(path)

    # -- dataset helpers the screens share ----------------------------------------------------------
    def require_dataset(self) -> Any:
        from tagging.errors import DatasetError

        if self.dataset is None:
            raise DatasetError(self.dataset_error or "The dataset is still loading (or none was found).")
        return self.dataset

    def tag_vocabulary(self) -> list[str]:
        """Autocomplete words: the dataset's tags (most frequent first), then the tagger's labels."""
        words: list[str] = []
        if self.dataset is not None:
            from tagging.stats import tag_frequency

            words.extend(row.tag for row in tag_frequency(self.dataset.images))
        seen = set(words)
        for label in self.tagger_labels():
            if label not in seen:
                seen.add(label)
                words.append(label)
        return words

    def tag_counts(self, images: Any) -> list[tuple[str, int]]:
        """(tag, number of images) for ``images``, most frequent first."""
        from tagging.stats import tag_frequency

        return [(row.tag, row.count) for row in tag_frequency(list(images))]

    def feature_suggestions(self, folder: str | None = None) -> dict[str, list[str]]:
        """Suggested character-feature tags (``tagging.features``) → the folders they are suggested for."""
        if self.dataset is None:
            return {}
        from tagging.features import suggest_features

        out: dict[str, list[str]] = {}
        for fs in suggest_features(self.dataset, folder=folder):
            for feat in fs.features:
                out.setdefault(feat.tag, []).append(fs.folder)
        return out

    def tagger_labels(self) -> list[str]:
        cached = self.extra.get("tagger_labels")
        if cached is not None:
            return cached
        labels: list[str] = []
        folder = self.workspace.tagger_dir
        if folder is not None:
            try:
                from tagging.tagger.labels import load_labels

                labels = list(load_labels(folder / "selected_tags.csv").names)
            except Exception:  # noqa: BLE001 - autocomplete is a convenience; the Tagger screen reports errors
                labels = []
        self.extra["tagger_labels"] = labels
        return labels

    def mark_wrong(self, key: str, tag: str) -> None:
        """Remove ``tag`` from one image (undoable) and remember the pair in ``.kazari/wrong_tags.json``
        so a later auto-tagging pass can be reviewed against it."""
        import json

        from tagging.atomic import atomic_write_text
        from tagging.edits import RemoveTags

        ds = self.require_dataset()
        ds.apply(RemoveTags([tag]), keys=[key])
        path = ds.root / ".kazari" / "wrong_tags.json"
        try:
            data = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
        except (OSError, ValueError):
            data = {}
        data.setdefault(key, [])
        if tag not in data[key]:
            data[key].append(tag)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(data, indent=1, sort_keys=True) + "\n")

    # -- config --------------------------------------------------------------------------------------
    def config_document(self) -> Any:
        """The workspace config open for editing; a new in-memory one when the file does not exist."""
        if self.config is None:
            from trainer.config.document import ConfigDocument
            from tui.workspace import CONFIG_NAME

            path = self.workspace.config_path or self.workspace.root / CONFIG_NAME
            if path.is_file():
                self.config = ConfigDocument.load(path)
            else:
                from trainer.config import preset

                cfg = preset("anime-character")
                if self.workspace.dataset_root is not None:
                    cfg = cfg.model_copy(deep=True)
                    cfg.dataset.train_data_dir = self.workspace.dataset_root
                self.config = ConfigDocument.new(path, cfg, header="kazari training config")
        return self.config

    def apply_preset(self, name: str) -> int:
        """Write a preset's values into the document, keeping paths and prompts. Returns #changed."""
        from trainer.config import field_specs, preset

        doc = self.config_document()
        cfg = preset(name)
        changed = 0
        for spec in field_specs():
            if spec.kind in ("path", "prompts"):
                continue
            value = cfg.get(spec.key)
            if value != doc.get(spec.key):
                doc.set(spec.key, value)
                changed += 1
        return changed

    def measured_seconds_per_step(self) -> float | None:
        import json

        path = self.workspace.state_dir / "speed.json"
        try:
            return float(json.loads(path.read_text(encoding="utf-8"))["seconds_per_step"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def remember_speed(self, seconds_per_step: float) -> None:
        import json

        from tagging.atomic import atomic_write_text

        self.workspace.state_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(
            self.workspace.state_dir / "speed.json", json.dumps({"seconds_per_step": seconds_per_step}) + "\n"
        )

    def derived_lines(self, doc: Any) -> list[str]:
        """Steps and time for the document (blocking). Problems are lines too, never exceptions."""
        from trainer.config import ConfigError
        from trainer.config.checks import check_config
        from trainer.config.derived import derived_figures

        try:
            cfg = doc.resolved_config()
        except ConfigError as err:
            issues = [f"• {i}" for i in getattr(err, "issues", [])] or [str(err)]
            return ["config has errors:", *issues]
        # The same check every run passes (TrainingRun._gate), so what is shown here is what a
        # run would refuse or warn about.
        head: list[str] = []
        found = check_config(cfg, path=doc.path)
        errors = [f"• {i.brief()}" for i in found if i.severity == "error"]
        warnings = [f"• {i.brief()}" for i in found if i.severity != "error"]
        if errors:
            head += ["config has errors (a run would refuse to start):", *errors, ""]
        if warnings:
            head += ["warnings:", *warnings, ""]
        dataset = None
        ds = self.dataset
        train_dir = cfg.dataset.train_data_dir
        if ds is not None and train_dir is not None and ds.root.resolve() == train_dir.resolve():
            dataset = ds
        try:
            figures = derived_figures(cfg, dataset, seconds_per_step=self.measured_seconds_per_step())
        except UserError as err:
            return [*head, str(err)]
        lines = [f"steps: {figures.steps_per_epoch}/epoch × {figures.epochs} = {figures.total_steps}"]
        if figures.estimated_seconds is None:
            lines.append("time: unknown until a run measured the speed")
        else:
            from trainer.durations import format_duration

            lines.append(f"time: ~{format_duration(figures.estimated_seconds)} "
                         f"({figures.seconds_per_step:.3g} s/step measured)")
        lines.append("")
        lines.extend(head)
        lines.extend(figures.lines())
        return lines
