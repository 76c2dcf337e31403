"""KazariApp: one Textual app, six modes (Dataset, Tags, Tagger, Config, Train, Grid).

Every action is a ``Binding`` with a description, so it shows in the footer, in the help screen (F1
or ?) and in the command palette (ctrl+p) — all three are generated from the same bindings.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

from textual import events
from textual.app import App
from textual.binding import Binding

from tagging.errors import UserError
from tui.help import BindingsProvider, HelpScreen, describe_bindings
from tui.logcapture import LogSink, capture_python_logging
from tui.screen_table import SCREEN_NAMES, SCREEN_TABLE
from tui.screens.base import KazariScreen
from tui.screens.config.screen import ConfigScreen
from tui.screens.dataset.screen import DatasetScreen
from tui.screens.gather.screen import GatherScreen
from tui.screens.grid.screen import GridScreen
from tui.screens.tagger.screen import TaggerScreen
from tui.screens.tags.screen import TagsScreen
from tui.screens.train.screen import TrainScreen
from tui.session import Session
from tui.training import TrainingController
from tui.widgets.dialogs import BusyScreen, ChoiceScreen, ConfirmScreen
from tui.widgets.logview import LogScreen
from tui.widgets.modebar import EXTRA_MODES
from tui.widgets.modebar import MODES as MODE_KEYS
from tui.workspace import Workspace, no_dataset_message


def mode_screens(classes: dict[str, type]) -> dict[str, type]:
    """The screen class of each mode, in table order; refuses a mode missing from, or extra to, the table."""
    if set(classes) != set(SCREEN_NAMES):
        raise RuntimeError(f"app modes {sorted(classes)} differ from tui.screen_table {sorted(SCREEN_NAMES)}")
    return {name: classes[name] for name in SCREEN_NAMES}


HELP_NOTES = (
    "Modes: " + " · ".join(f"{k} {t}" for _, k, t in MODE_KEYS) + ", in the order the loop runs, and "
    + ", ".join(f"{k} {t}" for _, k, t in EXTRA_MODES) + " (fetch and clean images). "
    f"While typing in a field, alt+1..{SCREEN_TABLE[-1].key} switch, or Escape leaves the field. Tab / shift+tab move between panes and fields (the Dataset screen's tag "
    "list, the Tagger's thresholds, the Config form). ctrl+p opens the command palette with every action of the current screen; "
    "ctrl+l shows the log (library output never paints over the screen); ctrl+q quits (asks first "
    "about unsaved captions or config edits, and while training, whose run it stops and saves)."
)

IMAGE_MODES = ("halfcell", "auto", "sixel", "tgp", "unicode")


class KazariApp(App[None]):
    CSS_PATH = "app.tcss"
    TITLE = "kazari"
    COMMANDS = App.COMMANDS | {BindingsProvider}
    MODES = mode_screens({
        "dataset": DatasetScreen,
        "tagger": TaggerScreen,
        "tags": TagsScreen,
        "config": ConfigScreen,
        "train": TrainScreen,
        "grid": GridScreen,
        "gather": GatherScreen,
    })
    BINDINGS = [
        *(
            Binding(key, f"switch_mode('{name}')", label, show=False, id=f"mode-{name}")
            for name, key, label in (*MODE_KEYS, *EXTRA_MODES)
        ),
        # From inside a text field the digit is typed; alt+digit switches anyway.
        *(
            Binding(f"alt+{key}", f"switch_mode('{name}')", label, show=False, priority=True,
                    id=f"mode-alt-{name}")
            for name, key, label in (*MODE_KEYS, *EXTRA_MODES)
        ),
        Binding("f1,question_mark", "help", "Help", id="help"),
        Binding("ctrl+l", "show_log", "Log", id="log"),
        Binding("ctrl+q", "quit", "Quit", priority=True, id="quit"),
    ]

    def __init__(
        self,
        workspace: Workspace,
        *,
        start_mode: str = "dataset",
        image_mode: str = "halfcell",
        log_to_file: bool = True,
    ) -> None:
        super().__init__()
        sink = LogSink(workspace.log_path if log_to_file else None)
        self.session = Session(workspace=workspace, sink=sink, image_mode=image_mode)
        self.training = TrainingController(self)
        self.start_mode = start_mode
        self.lint_pending = False
        self._logging_cm: contextlib.AbstractContextManager[None] | None = None

    # -- lifecycle -------------------------------------------------------------------------------
    def on_mount(self) -> None:
        self._logging_cm = capture_python_logging(self.session.sink)
        self._logging_cm.__enter__()
        self.begin_capture_print(self)
        self.switch_mode(self.start_mode)
        self.load_dataset()

    def load_dataset(self) -> None:
        """Open the dataset in a thread worker; the active screen redraws when it is ready."""
        session = self.session
        if session.loading:
            return
        if session.workspace.dataset_root is None:
            session.dataset_error = no_dataset_message(session.workspace.root)
            return
        session.loading = True

        def body() -> None:
            try:
                session.load_dataset()
            except BaseException as err:  # noqa: BLE001 - shown to the user
                self.call_from_thread(self._dataset_failed, err)
            else:
                self.call_from_thread(self._dataset_loaded)
            finally:
                session.loading = False

        self.run_worker(body, thread=True, group="dataset-load", exclusive=True, exit_on_error=False)

    def _dataset_loaded(self) -> None:
        if self.session.dataset is not None:
            # Recovered interrupted saves, removed temp files, a damaged history: the user must know.
            for warning in self.session.dataset.warnings:
                self.notify(warning, severity="warning", timeout=15)
            self.run_lint()
        screen = self.screen
        if hasattr(screen, "on_dataset_loaded"):
            screen.on_dataset_loaded()

    def run_lint(self) -> None:
        """Lint decodes every image (slow on big sets), so it runs after the list is on screen."""
        session = self.session
        ds = session.dataset
        self.lint_pending = True

        def body() -> None:
            try:
                findings = session.run_lint(ds)
            except BaseException as err:  # noqa: BLE001 - reported, the app keeps working without lint
                self.call_from_thread(self._lint_failed, err)
                return
            self.call_from_thread(self._linted, findings)

        self.run_worker(body, thread=True, group="lint", exclusive=True, exit_on_error=False)

    @property
    def busy(self) -> bool:
        """True while the dataset is loading or being linted (tests and snapshots wait on it)."""
        return self.session.loading or self.lint_pending

    def _linted(self, findings: list, error: str | None = None) -> None:
        self.lint_pending = False
        self.session.findings = findings
        self.session.lint_error = error
        screen = self.screen
        if hasattr(screen, "on_findings"):
            screen.on_findings()

    def _lint_failed(self, err: BaseException) -> None:
        # Not _dataset_loaded: that starts lint again, and a lint that fails every time would loop.
        self.report_job_error("lint", err)
        self._linted([], error=str(err))

    def _dataset_failed(self, err: BaseException) -> None:
        self.report_job_error("loading the dataset", err)
        screen = self.screen
        if hasattr(screen, "on_dataset_loaded"):
            screen.on_dataset_loaded()  # redraws "no dataset" with the reason instead of "loading"

    def report_job_error(self, what: str, err: BaseException) -> None:
        """A failed app-wide job ends in the error panel of the mode screen in view (under any
        dialog or help box), which stays until dismissed; the toast alone would vanish."""
        for screen in reversed(self.screen_stack):
            if isinstance(screen, KazariScreen):
                screen.show_job_error(what, err)
                return
        self.notify(f"{what} failed: {err}", severity="error", timeout=12)

    def on_print(self, event: events.Print) -> None:
        self.session.sink.write(event.text, "stderr" if event.stderr else "stdout")

    def on_unmount(self) -> None:
        self.session.stop_event.set()
        if self.session.image_server is not None:
            self.session.image_server.stop()
        if self._logging_cm is not None:
            self._logging_cm.__exit__(None, None, None)
            self._logging_cm = None
        self.session.sink.close()

    # -- app-wide actions ------------------------------------------------------------------------
    def action_help(self) -> None:
        screen = self.screen
        if isinstance(screen, HelpScreen):
            return
        title = type(screen).__name__.replace("Screen", "")
        self.push_screen(HelpScreen(title, describe_bindings(screen), HELP_NOTES))

    def action_show_log(self) -> None:
        if isinstance(self.screen, LogScreen):
            self.pop_screen()
            return
        ws = self.session.workspace
        where = ws.display(ws.log_path) if self.session.sink.path else "not written to a file"
        self.push_screen(LogScreen(self.session.sink, where))

    def unsaved_changes(self) -> list[str]:
        """What quitting now would lose: unsaved captions and config edits, in words."""
        parts = []
        ds = self.session.dataset
        dirty = len(ds.dirty_keys) if ds is not None else 0
        if dirty:
            parts.append(f"{dirty} caption{'s' if dirty != 1 else ''}")
        doc = self.session.config
        if doc is not None and doc.dirty:
            parts.append(f"config {doc.path.name}")
        return parts

    async def action_quit(self) -> None:
        if isinstance(self.screen, (BusyScreen, ChoiceScreen, ConfirmScreen)):
            return  # a question (maybe this one) is open, or a save is running: let it finish
        unsaved = self.unsaved_changes()
        if unsaved:
            self.push_screen(
                ChoiceScreen(
                    f"Unsaved edits: {' and '.join(unsaved)}. Save them before quitting?",
                    [("s", "save and quit", "save"), ("d", "discard and quit", "discard")],
                ),
                self._unsaved_answered,
            )
            return
        self._quit_unless_training()

    def _unsaved_answered(self, answer: str | None) -> None:
        if answer == "save" and not self.save_all():
            return  # the error is on screen; stay so nothing is lost
        if answer in ("save", "discard"):
            self._quit_unless_training()

    def save_all(self) -> bool:
        """Save captions and the config (no overwriting of files changed on disk). True on success."""
        session = self.session
        try:
            if session.dataset is not None:
                session.dataset.save()
            if session.config is not None and session.config.dirty:
                session.config.save()
        except UserError as err:
            show = getattr(self.screen, "show_error", None)
            if show is not None:
                show(err)
            else:
                self.notify(str(err), severity="error", timeout=12)
            return False
        return True

    def _quit_unless_training(self) -> None:
        if not self.training.running:
            self.exit()
            return
        self.push_screen(
            ConfirmScreen("A training run is in progress. Stop it (a checkpoint is saved) and quit?"),
            self._quit_answered,
        )

    def _quit_answered(self, yes: bool | None) -> None:
        if yes:
            self.notify("Stopping training and saving a checkpoint…", timeout=30)
            self.training.stop()
            self.run_worker(self._exit_after_training(), group="quit", exclusive=True)

    async def _exit_after_training(self) -> None:
        await asyncio.to_thread(self.training.wait)
        self.exit()


def make_app(root: Path | str | None = None, config: Path | str | None = None, **kwargs) -> KazariApp:
    """Build the app for a folder (what ``kazari open`` and the tests use)."""
    from tui.workspace import resolve_workspace

    return KazariApp(resolve_workspace(root, config), **kwargs)
