"""The Gather screen: fetch a character's images from a booru (progress, cancel), browse what
arrived, accept or reject each with one key (reject = trash, undoable), remove backgrounds and
compare before/after side by side, undo.

Fetching and segmentation run in thread workers; every dataset write (captions, replaced images,
trash) happens on the UI thread through the dataset engine, so undo covers all of it.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import DataTable, Input, Label, ProgressBar, Static

from tagging.errors import UserError
from tui.screens.base import KazariScreen
from tui.screens.gather.state import arrivals, before_after, describe
from tui.session import LinkedEvent
from tui.widgets.preview import ImagePreview

SITES = ("danbooru", "gelbooru", "safebooru")


class GatherScreen(KazariScreen):
    MODE = "gather"
    DEFAULT_CSS = """
    GatherScreen #ga-form { height: auto; padding: 0 1; }
    GatherScreen .row { height: 1; }
    GatherScreen .row Label { width: 7; }
    GatherScreen .row Label.after { width: auto; padding: 0 1; }
    GatherScreen .row Input { width: 1fr; border: none; height: 1; }
    GatherScreen #ga-limit, GatherScreen #ga-min { width: 6; }
    GatherScreen #ga-rating { width: 10; }
    GatherScreen #ga-site-name { width: 16; }
    GatherScreen #ga-status { height: auto; padding: 0 1; }
    GatherScreen #ga-info { height: 1; padding: 0 1; color: $text-muted; }
    GatherScreen ProgressBar { padding: 0 1; height: 1; }
    GatherScreen #ga-main { height: 1fr; }
    GatherScreen #ga-table { width: 34; }
    GatherScreen .pane { width: 1fr; }
    GatherScreen .pane Label { dock: top; width: 100%; text-align: center; color: $text-muted; }
    GatherScreen .pane ImagePreview { height: 1fr; overflow: hidden; }
    """
    BINDINGS = [
        Binding("ctrl+r", "fetch", "Fetch", id="ga-fetch"),
        Binding("ctrl+g", "cancel", "Cancel", id="ga-cancel"),
        Binding("a", "accept", "Accept", id="ga-accept"),
        Binding("x", "reject", "Reject", id="ga-reject"),
        Binding("b", "remove_bg", "Remove bg", id="ga-clean"),
        Binding("u", "undo", "Undo", id="ga-undo"),
        Binding("r", "redo", "Redo", id="ga-redo"),
        Binding("ctrl+o", "cycle_site", "Site", id="ga-site"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.site = SITES[0]
        self.progress: Any = None  # latest FetchProgress / CleanProgress (written by the worker)
        self.cancel_event: threading.Event | None = None
        self.running = ""  # "fetch" / "clean" while a job runs
        self.accepted: set[str] = set()
        self.keys: list[str] = []
        self.last = ""

    def compose_body(self) -> ComposeResult:
        with Vertical(id="ga-form"):
            with Horizontal(classes="row"):
                yield Label("search")
                yield Input("", placeholder="character tag, e.g. uiharu_kazari", id="ga-tags", compact=True)
                yield Label("limit", classes="after")
                yield Input("40", id="ga-limit", compact=True)
                yield Label("min px", classes="after")
                yield Input("512", id="ga-min", compact=True)
            with Horizontal(classes="row"):
                yield Label("site")
                yield Static("", id="ga-site-name")
                yield Label("url", classes="after")
                yield Input("", placeholder="default site URL", id="ga-url", compact=True)
            with Horizontal(classes="row"):
                yield Label("model")
                yield Input("anime-seg", id="ga-model", compact=True)
                yield Label("rating", classes="after")
                yield Input("g,s", id="ga-rating", compact=True)
        yield ProgressBar(total=None, show_eta=False, id="ga-progress")
        yield Static("", id="ga-status")
        yield Static("", id="ga-info")
        with Horizontal(id="ga-main"):
            yield DataTable(id="ga-table", cursor_type="row")
            with Vertical(classes="pane"):
                yield Label("before")
                yield ImagePreview(self.session.image_mode, id="ga-before")
            with Vertical(classes="pane"):
                yield Label("after")
                yield ImagePreview(self.session.image_mode, id="ga-after")

    def on_mount(self) -> None:
        table = self.query_one("#ga-table", DataTable)
        table.add_column("image", key="image", width=24)
        table.add_column("state", key="state", width=8)
        self.query_one("#ga-progress", ProgressBar).display = False
        self._draw_site()
        self.set_interval(0.25, self._poll_progress)

    def _draw_site(self) -> None:
        self.query_one("#ga-site-name", Static).update(f"{self.site} (^o)")

    # -- drawing ----------------------------------------------------------------------------------
    def refresh_view(self) -> None:
        ds = self.session.dataset
        table = self.query_one("#ga-table", DataTable)
        status = self.query_one("#ga-status", Static)
        if ds is None:
            table.clear()
            status.update(self.session.dataset_error or "no dataset loaded")
            return
        cursor = table.cursor_row
        self.keys = arrivals(ds)
        table.clear()
        for key in self.keys:
            cleaned = before_after(ds, key)[1] is not None
            state = "accepted" if key in self.accepted else ("cleaned" if cleaned else "new")
            table.add_row(Text(key.rsplit("/", 1)[-1]), state, key=key)
        if self.keys:
            table.move_cursor(row=min(max(cursor, 0), len(self.keys) - 1))
        if not self.running:
            status.update(self.last or (f"{len(self.keys)} fetched image(s) · ^r fetches · a accept · x reject · "
                                        "b removes backgrounds · u undo" if self.keys else
                                        "No fetched images yet: type a tag and press ^r."))
        self._show_selected()

    def _selected(self) -> str | None:
        table = self.query_one("#ga-table", DataTable)
        if not self.keys or table.cursor_row is None or table.cursor_row >= len(self.keys):
            return None
        return self.keys[table.cursor_row]

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        self._show_selected()

    def _show_selected(self) -> None:
        before = self.query_one("#ga-before", ImagePreview)
        after = self.query_one("#ga-after", ImagePreview)
        key = self._selected()
        ds = self.session.dataset
        info = self.query_one("#ga-info", Static)
        if key is None or ds is None:
            before.show(None)
            after.show(None)
            info.update("")
            return
        info.update(Text(describe(ds, key), no_wrap=True, overflow="ellipsis"))
        original, cleaned = before_after(ds, key)
        before.show(original)
        after.show(cleaned, note="not cleaned (b)")

    def _poll_progress(self) -> None:
        prog = self.progress
        if not self.running or prog is None:
            return
        bar = self.query_one("#ga-progress", ProgressBar)
        if self.running == "fetch":
            bar.update(total=max(prog.limit, 1), progress=prog.done)
            self.query_one("#ga-status", Static).update(
                f"fetching: {prog.done}/{prog.limit} · seen {prog.seen} · skipped {prog.skipped} · "
                f"failed {prog.failed} · ^g cancels")
        else:
            bar.update(total=max(prog.total, 1), progress=prog.done)

    def _start(self, kind: str, text: str) -> threading.Event:
        self.running = kind
        self.progress = None
        self.cancel_event = LinkedEvent(self.session.stop_event)
        bar = self.query_one("#ga-progress", ProgressBar)
        bar.display = True
        bar.update(total=None, progress=0)
        self.query_one("#ga-status", Static).update(text)
        return self.cancel_event

    def _stop(self) -> None:
        self.running = ""
        self.query_one("#ga-progress", ProgressBar).display = False

    # -- fetch --------------------------------------------------------------------------------------
    def _into(self, ds: Any, tag: str) -> Path:
        numbered = [f for f in ds.folders if not f.plain]
        return numbered[0].path if numbered else ds.root / f"2_{tag}"

    def action_fetch(self) -> None:
        from tagging.gather.fetch import DEFAULT_EXCLUDE, FetchOptions, fetch

        if self.running:
            self.notify(f"A {self.running} is already running (^g cancels).")
            return
        try:
            ds = self.session.require_dataset()
            tags = tuple(self.query_one("#ga-tags", Input).value.split())
            if not tags:
                raise UserError("Type the character's tag in 'search' first (e.g. uiharu_kazari).")
            limit_text = self.query_one("#ga-limit", Input).value.strip()
            if not limit_text.isdigit() or int(limit_text) < 1:
                raise UserError(f"limit {limit_text!r} is not a whole number of at least 1.")
            min_text = self.query_one("#ga-min", Input).value.strip() or "0"
            if not min_text.isdigit():
                raise UserError(f"min px {min_text!r} is not a whole number of pixels (0 keeps every size).")
            ratings = frozenset(r.strip() for r in self.query_one("#ga-rating", Input).value.split(",") if r.strip())
            if ds.dirty_keys:
                raise UserError("Save the caption edits first (s on the Tags screen): fetching re-reads the dataset.")
        except UserError as err:
            self.show_error(err)
            return
        url = self.query_one("#ga-url", Input).value.strip() or None
        options = FetchOptions(tags=tags, site=self.site, limit=int(limit_text), exclude=DEFAULT_EXCLUDE,
                               base_url=url, min_side=int(min_text), ratings=ratings or None)
        into = self._into(ds, tags[0])
        cancel = self._start("fetch", f"searching {self.site} for {' '.join(tags)}…")
        http = self._http_options()

        def on_progress(p: Any) -> None:
            self.progress = p

        def work() -> Any:
            try:
                return fetch(options, into, http=http, on_progress=on_progress, cancel=cancel, write=False)
            except BaseException as err:  # noqa: BLE001 - handed to the UI thread, which shows it
                return err

        self.run_job(work, self._fetched, group="gather", description="fetching images")

    def _http_options(self) -> Any:
        from tagging.gather.http import HttpOptions

        return getattr(self.kapp, "gather_http", None) or HttpOptions()

    def _fetched(self, report: Any) -> None:
        from tagging.gather.fetch import write_captions

        self._stop()
        if isinstance(report, BaseException):
            self.show_error(report)
            partial = getattr(report, "report", None)  # a site failure after some images arrived
            if partial is None:
                self.refresh_view()
                return
            report = partial
        ds = self.session.dataset
        ds.reload()  # the new image files
        if report.pending_captions:
            try:
                write_captions(ds, report.pending_captions, report.site)
            except UserError as err:
                self.show_error(err)
        self.last = (f"fetched {len(report.saved)} new image(s) ({len(report.existing)} already there, "
                     f"{len(report.skipped)} skipped, {len(report.duplicates)} duplicates, {len(report.failed)} failed)"
                     f"{' · cancelled' if report.cancelled else ''}")
        self.kapp.run_lint()
        self.refresh_view()
        self.update_status()

    def action_cancel(self) -> None:
        if self.cancel_event is not None and self.running:
            self.cancel_event.set()
            self.notify(f"stopping the {self.running}…")

    def action_cycle_site(self) -> None:
        self.site = SITES[(SITES.index(self.site) + 1) % len(SITES)]
        self._draw_site()

    # -- review -------------------------------------------------------------------------------------
    def _advance(self) -> None:
        table = self.query_one("#ga-table", DataTable)
        if self.keys and table.cursor_row < len(self.keys) - 1:
            table.move_cursor(row=table.cursor_row + 1)

    def action_accept(self) -> None:
        key = self._selected()
        if key is None:
            return
        self.accepted.add(key)
        self.query_one("#ga-table", DataTable).update_cell(key, "state", "accepted")
        self._advance()

    def action_reject(self) -> None:
        key = self._selected()
        ds = self.session.dataset
        if key is None or ds is None:
            return
        try:
            ds.trash(key)
        except UserError as err:
            self.show_error(err)
            return
        self.accepted.discard(key)
        self.last = f"rejected {key} (in .kazari/trash; u undoes)"
        self.refresh_view()

    def action_undo(self) -> None:
        self.do_undo()
        self._save_quietly()

    def action_redo(self) -> None:
        self.do_redo()
        self._save_quietly()

    def _save_quietly(self) -> None:
        ds = self.session.dataset
        if ds is not None and ds.dirty_keys:
            try:
                ds.save()  # undoing fetched captions writes them back, as the CLI does
            except UserError as err:
                self.show_error(err)
        self.refresh_view()

    # -- background removal -------------------------------------------------------------------------
    def _model_arg(self) -> str:
        value = self.query_one("#ga-model", Input).value.strip() or "anime-seg"
        path = self.session.workspace.root / value
        return str(path) if path.exists() else value

    def action_remove_bg(self) -> None:
        from tagging.gather.clean import CleanOptions, clean_dataset
        from tagging.gather.segment import Segmenter

        if self.running:
            self.notify(f"A {self.running} is already running (^g cancels).")
            return
        ds = self.session.dataset
        keys = [k for k in self.keys if before_after(ds, k)[1] is None] if ds is not None else []
        if not keys:
            self.notify("No fetched image left to clean.")
            return
        model = self._model_arg()
        cancel = self._start("clean", f"removing backgrounds of {len(keys)} image(s) with {model}…")
        options = CleanOptions(remove_bg=True, dry_run=True)

        def on_progress(p: Any) -> None:
            self.progress = p

        def work() -> Any:
            try:
                return clean_dataset(ds, options, Segmenter.load(model), keys=keys, on_progress=on_progress,
                                     cancel=cancel)
            except BaseException as err:  # noqa: BLE001 - handed to the UI thread, which shows it
                return err

        self.run_job(work, self._cleaned, group="gather", description="removing backgrounds")

    def _cleaned(self, report: Any) -> None:
        from tagging.gather.clean import CleanOptions, apply_clean

        self._stop()
        if isinstance(report, BaseException):
            self.show_error(report)
            self.refresh_view()
            return
        try:
            apply_clean(self.session.dataset, report, CleanOptions(remove_bg=True))
        except UserError as err:
            self.show_error(err)
        skipped = len(report.empty) + len(report.full)
        self.last = (f"background removed from {len(report.changed)} image(s); {skipped} left alone (empty or "
                     f"full mask), {len(report.failed)} failed · u undoes")
        self.refresh_view()
