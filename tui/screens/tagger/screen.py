"""The Tagger screen: choose a model and thresholds, run auto-tagging (progress, cancel), then move
the thresholds and watch the proposed captions change instantly from the scores held in memory,
before applying them as one undoable edit."""

from __future__ import annotations

import threading
from typing import Any

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import DataTable, Input, Label, ProgressBar, Static

from tagging.errors import UserError
from tui.screens.base import KazariScreen
from tui.screens.tagger.state import TaggerState, parse_threshold
from tui.session import LinkedEvent
from tui.widgets.tables import reset_columns


class TaggerScreen(KazariScreen):
    MODE = "tagger"
    DEFAULT_CSS = """
    TaggerScreen #tt-form { height: auto; padding: 0 1; }
    TaggerScreen .row { height: 1; }
    TaggerScreen .row Label { width: 12; }
    TaggerScreen .row Label.wide { width: 14; }
    TaggerScreen .row Input { width: 1fr; border: none; height: 1; }
    TaggerScreen #tt-general, TaggerScreen #tt-character { width: 8; }
    TaggerScreen #tt-status, TaggerScreen #tt-error, TaggerScreen #tt-profile { height: auto; padding: 0 1; }
    TaggerScreen #tt-error { color: $error; }
    TaggerScreen ProgressBar { padding: 0 1; height: 1; }
    """
    BINDINGS = [
        Binding("ctrl+r", "run", "Run", id="tt-run"),
        Binding("ctrl+g", "cancel", "Cancel", id="tt-cancel"),
        Binding("ctrl+y", "apply", "Apply", id="tt-apply"),
        Binding("ctrl+o", "cycle_mode", "Mode", id="tt-mode"),
        Binding("ctrl+t", "toggle_mcut", "MCut", id="tt-mcut"),
        Binding("ctrl+b", "toggle_character", "Profile on/off", id="tt-character"),
        Binding("ctrl+n", "accept_offers", "Never-add offered", id="tt-offers"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.state: TaggerState | None = None
        self.mode = "append"
        self.mcut = False
        self.progress: Any = None  # latest tagging.tagger.Progress (written by the worker thread)
        self.cancel_event: threading.Event | None = None
        self.running = False
        self.honour = True  # honour the dataset's character profile (^b turns it off)
        self.job = 0  # id of the current run: a cancelled or superseded run's late result is dropped

    def compose_body(self) -> ComposeResult:
        with Vertical(id="tt-form"):
            with Horizontal(classes="row"):
                yield Label("model")
                yield Input(self._default_model(), id="tt-model", compact=True)
            with Horizontal(classes="row"):
                yield Label("general >")
                yield Input("0.35", id="tt-general", compact=True)
                yield Label("  character >", classes="wide")
                yield Input("0.85", id="tt-character", compact=True)
                yield Static("", id="tt-flags")
        yield Static("", id="tt-profile")
        yield Static("", id="tt-error")
        yield ProgressBar(total=None, show_eta=False, id="tt-progress")
        yield Static("", id="tt-status")
        table: DataTable = DataTable(id="tt-table", cursor_type="row")
        yield table

    def on_mount(self) -> None:
        reset_columns(self.query_one("#tt-table", DataTable),
                      [("image", "image", 5), ("tags after", "after", 3), ("changes", "diff", 9)])
        self._draw_flags()
        self._draw_profile()
        self.query_one("#tt-progress", ProgressBar).display = False
        self.set_interval(0.25, self._poll_progress)

    def _default_model(self) -> str:
        ws = self.session.workspace
        if ws.tagger_dir is not None:
            return ws.display(ws.tagger_dir)
        from tagging.tagger import DEFAULT_MODEL

        return DEFAULT_MODEL

    def _model_arg(self) -> str:
        value = self.query_one("#tt-model", Input).value.strip()
        path = self.session.workspace.root / value
        return str(path) if value and path.exists() else value

    # -- thresholds --------------------------------------------------------------------------------
    def options(self) -> Any:
        """TagOptions from the form; raises UserError naming the bad field."""
        from tagging.tagger import TagOptions

        general = parse_threshold("general", self.query_one("#tt-general", Input).value)
        character = parse_threshold("character", self.query_one("#tt-character", Input).value)
        return TagOptions(general=general, character=character, mcut=self.mcut)

    @on(Input.Changed, "#tt-general")
    @on(Input.Changed, "#tt-character")
    def _threshold_changed(self, event: Input.Changed) -> None:
        self._reselect()

    def character(self) -> Any:
        """The profile the merge honours (None when ^b turned it off); raises UserError if unreadable."""
        ds = self.session.dataset
        if not self.honour or ds is None:
            return None
        from tagging.character import load_character

        return load_character(ds.root)

    @on(Input.Submitted)
    def _field_submitted(self, event: Input.Submitted) -> None:
        self.action_leave_field()  # Enter leaves a field, so the screen keys work again

    def _reselect(self) -> None:
        error = self.query_one("#tt-error", Static)
        try:
            options = self.options()
            character = self.character()
        except UserError as err:
            error.update(str(err))
            return
        error.update("")
        if self.state is not None and self.session.dataset is not None:
            self.state.reselect(self.session.dataset, options, self.mode, character)
            self._draw_results()
        self._draw_profile()

    def _draw_profile(self) -> None:
        """Say what the run will do to the pruned tags (the Tagger runs before Tags prunes)."""
        line = self.query_one("#tt-profile", Static)
        if not self.honour:
            line.update(Text("character profile IGNORED: the model's tags are written as they are, pruned "
                             "features and its character tag included (^b honours the profile)", style="bold red"))
            return
        try:
            profile = self.character()
        except UserError:
            return  # shown in #tt-error
        if profile is None:
            line.update("")
            return
        kept = profile.features + profile.never_add
        text = Text("character profile: ")
        if kept:
            shown = ", ".join(kept[:5]) + (f" (+{len(kept) - 5})" if len(kept) > 5 else "")
            text.append(f"never writes {shown}", style="bold")
        else:
            text.append("no pruned features yet (P on Tags records them)")
        text.append(f"; trigger {profile.trigger} first" if profile.trigger else "; folder trigger kept first")
        text.append("; recognised character tags are offered, not written · ^b ignores the profile")
        line.update(text)

    def _draw_flags(self) -> None:
        self.query_one("#tt-flags", Static).update(
            f"  mode {self.mode} (^o) · mcut {'on' if self.mcut else 'off'} (^t)"
        )

    # -- drawing -----------------------------------------------------------------------------------
    def refresh_view(self) -> None:
        # Captions may have been edited on other screens since scoring: re-merge from the cached
        # scores, so the preview (and ^y) never carries stale captions over those edits.
        if self.state is not None and self.session.dataset is not None:
            self._reselect()
        else:
            self._draw_results()
            self._draw_profile()

    def _draw_results(self) -> None:
        status = self.query_one("#tt-status", Static)
        table = self.query_one("#tt-table", DataTable)
        table.clear()
        ds = self.session.dataset
        if ds is None:
            status.update(self.session.dataset_error or "no dataset loaded")
            return
        if self.state is None:
            status.update(f"{len(ds.images)} images. ^r runs the tagger (scores are cached per image).")
            return
        st = self.state
        rows = []
        for key in sorted(st.results):
            before = ds.image(key).tags
            after = st.final.get(key, before)
            added = [t for t in after if t not in before]
            removed = [t for t in before if t not in after]
            diff = Text()
            if added:
                diff.append("+" + " +".join(added), style="green")
            if removed:
                diff.append((" " if added else "") + "-" + " -".join(removed), style="red")
            rows.append((Text(key), str(len(after)), diff or Text("unchanged", style="dim")))
        reset_columns(table, [("image", "image", max((r[0].cell_len for r in rows), default=5)),
                              ("tags after", "after", 3),
                              ("changes", "diff", max((r[2].cell_len for r in rows), default=9))])
        table.add_rows(rows)
        offers = ""
        if st.offers:
            names = ", ".join(f"{t} ({n})" for t, n in st.offers[:3])
            offers = f"\nrecognised character tags, not written (trigger candidates): {names} · ^n adds to never-add"
        status.update(
            f"{st.model_name}: {len(st.results)} scored ({st.cached} from cache), {len(st.failed)} failed"
            f"{', cancelled' if st.cancelled else ''} · {len(st.final)} caption(s) would change · "
            f"^y applies (undoable){offers}"
        )

    def _poll_progress(self) -> None:
        prog = self.progress
        bar = self.query_one("#tt-progress", ProgressBar)
        if not self.running or prog is None:
            return
        bar.update(total=max(prog.total, 1), progress=prog.done)

    # -- actions -----------------------------------------------------------------------------------
    def action_run(self) -> None:
        if self.running:
            self.notify("Tagging is already running (^g cancels).")
            return
        try:
            ds = self.session.require_dataset()
            options = self.options()
            character = self.character()
        except UserError as err:
            self.show_error(err)
            return
        model = self._model_arg()
        self.job += 1
        job = self.job
        self.cancel_event = LinkedEvent(self.session.stop_event)
        self.running = True
        self.progress = None
        bar = self.query_one("#tt-progress", ProgressBar)
        bar.display = True
        bar.update(total=None, progress=0)
        self.query_one("#tt-status", Static).update(f"loading {model} and scoring {len(ds.images)} images…")
        items = [(img.key, img.path) for img in ds.images]
        cancel = self.cancel_event

        def work() -> TaggerState:
            def on_progress(p: Any) -> None:
                self.progress = p  # read by the UI timer; the worker never waits for the UI

            return TaggerState.score(ds, model, items, options, self.mode, on_progress, cancel, character)

        def done(state: TaggerState) -> None:
            if job == self.job:
                self._scored(state)

        def failed(err: BaseException) -> None:
            if job == self.job:
                self._stopped(f"Tagging with {model} failed (message above); fix it and press ^r to run again.")

        self.run_job(work, done, group=f"tagger-{job}", description=f"auto-tagging with {model}",
                     failed=failed)

    def _stopped(self, message: str) -> None:
        """Back to a usable screen after a failure or a cancel (a late result is then dropped)."""
        self.running = False
        self.query_one("#tt-progress", ProgressBar).display = False
        self.query_one("#tt-status", Static).update(message)

    def _scored(self, state: TaggerState) -> None:
        self.running = False
        self.state = state
        self.query_one("#tt-progress", ProgressBar).display = False
        self._draw_results()
        self._draw_profile()
        if state.cancelled:
            self.notify("Tagging cancelled; the images scored so far are kept.")

    def action_cancel(self) -> None:
        if self.running and self.cancel_event is not None:
            self.cancel_event.set()
            if self.progress is None:
                # Still loading (or downloading) the model, which cannot be interrupted: let go of
                # the run now; its result, when it comes, is dropped.
                self.job += 1
                self._stopped("Tagging cancelled while loading the model; ^r runs again.")
            else:
                self.notify("Cancelling after the current batch…")

    def action_apply(self) -> None:
        if self.state is None:
            self.notify("Nothing to apply: run the tagger first (^r).")
            return
        try:
            ds = self.session.require_dataset()
            self.state.reselect(ds, self.options(), self.mode, self.character())  # against the captions now
            change = self.state.apply(ds)
        except UserError as err:
            self.show_error(err)
            return
        if change is None:
            self.notify("Nothing to apply: no caption would change.")
            self._draw_results()
            return
        self.notify(f"applied to {len(change)} image(s) — s on Tags/Dataset saves, u undoes")
        self.state.reselect(self.session.dataset, self.options(), self.mode, self.character())
        self._draw_results()
        self.update_status()

    def action_cycle_mode(self) -> None:
        from tagging.tagger import MODES

        self.mode = MODES[(MODES.index(self.mode) + 1) % len(MODES)]
        self._draw_flags()
        self._reselect()

    def action_toggle_mcut(self) -> None:
        self.mcut = not self.mcut
        self._draw_flags()
        self._reselect()


    def action_toggle_character(self) -> None:
        self.honour = not self.honour
        self.notify("character profile " + ("honoured" if self.honour else "ignored: the model's tags are written as they are"))
        self._reselect()

    def action_accept_offers(self) -> None:
        """Put the recognised character tags on the profile's never-add list (saved at once)."""
        ds = self.session.dataset
        if self.state is None or ds is None or not self.state.offers:
            self.notify("No recognised character tags to add (run the tagger with the profile honoured).")
            return
        from tagging.character import load_character, save_character

        tags = [t for t, _ in self.state.offers]
        try:
            profile = load_character(ds.root)
            profile.add_never(tags)
            save_character(ds.root, profile)
        except UserError as err:
            self.show_error(err)
            return
        self.notify(f"never-add: {', '.join(tags)} (kazari dataset character --allow … undoes)")
        self._reselect()
