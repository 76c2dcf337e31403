"""The Grid screen: run the epoch × weight grid of the last run, browse the cells, view one large,
judge every cell (heatmap + per-cell breakdown, the recommended cell starred) and mark the chosen
epoch (copied as the final LoRA; the cursor starts on the recommendation)."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import DataTable, Input, Label, ProgressBar, Static

from tagging.errors import UserError
from tui.screens.base import KazariScreen
from tui.screens.grid.job import (
    GridJob,
    JudgeJob,
    breakdown,
    choose_epoch,
    heat_colour,
    judged_cells,
    load_last_judgement,
    parse_weights,
    recommended_cell,
)
from tui.widgets.dialogs import ConfirmScreen
from tui.widgets.preview import ImagePreview

DEFAULT_WEIGHTS = "0,0.4,0.6,0.8,1"


class LargeImageScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,v,q,enter", "close", "Close")]
    DEFAULT_CSS = """
    LargeImageScreen { align: center middle; }
    LargeImageScreen > Vertical { width: 100%; height: 100%; background: $surface; }
    LargeImageScreen Label { height: 1; }
    """

    def __init__(self, source: Any, title: str, mode: str) -> None:
        super().__init__()
        self.source, self.title_text, self.mode = source, title, mode

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(f"{self.title_text}  (Escape closes)")
            yield ImagePreview(self.mode, id="large")

    def on_mount(self) -> None:
        self.query_one(ImagePreview).show(self.source)

    def action_close(self) -> None:
        self.dismiss(None)


class GridScreen(KazariScreen):
    MODE = "grid"
    DEFAULT_CSS = """
    GridScreen #gr-form { height: 1; padding: 0 1; }
    GridScreen #gr-form Label { width: auto; }
    GridScreen #gr-weights { width: 24; height: 1; border: none; }
    GridScreen #gr-status { height: auto; padding: 0 1; }
    GridScreen ProgressBar { height: 1; padding: 0 1; }
    GridScreen #gr-table { width: auto; max-width: 70%; }
    GridScreen #gr-side { width: 1fr; }
    GridScreen #gr-cell { height: 1; }
    GridScreen #gr-breakdown { height: auto; max-height: 4; color: $text-muted; }
    """
    BINDINGS = [
        Binding("g", "build", "Build grid", id="gr-build"),
        Binding("c", "cancel", "Cancel", id="gr-cancel"),
        Binding("v", "view", "View large", id="gr-view"),
        Binding("e", "choose", "Choose epoch", id="gr-choose"),
        Binding("j", "judge", "Judge", id="gr-judge"),
        Binding("w", "focus_weights", "Weights", id="gr-weights"),
        Binding("o", "share", "Share full-size image", id="gr-share"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.job: GridJob | None = None
        self.result: Any = None
        self.running = False
        self.judging: JudgeJob | None = None
        self.judgement: dict[str, Any] | None = None  # judge.json of the run (fresh or from disk)
        self._timer: Any = None

    def compose_body(self) -> ComposeResult:
        with Horizontal(id="gr-form"):
            yield Label("weights ")
            yield Input(DEFAULT_WEIGHTS, id="gr-weights", compact=True)
        yield Static("", id="gr-status")
        yield ProgressBar(total=None, show_eta=False, id="gr-progress")
        with Horizontal():
            yield DataTable(id="gr-table", cursor_type="cell")
            with Vertical(id="gr-side"):
                yield Static("", id="gr-cell", classes="pane-title")
                yield Static("", id="gr-breakdown")
                yield ImagePreview(self.session.image_mode, id="gr-preview")

    def on_mount(self) -> None:
        self.query_one("#gr-progress", ProgressBar).display = False
        self.query_one(ImagePreview).show(None, "no cell selected")
        self._timer = self.set_interval(0.25, self.poll, pause=True)
        # While training runs, look for newly saved epochs so the table fills as they land.
        self.set_interval(2.0, self._watch_training)
        self.refresh_view()

    def _watch_training(self) -> None:
        if self.kapp.training.running and not self.running and self.judging is None and self.result is None:
            self.refresh_view()

    def refresh_view(self) -> None:
        if self.running or self.result is not None:
            return
        status = self.query_one("#gr-status", Static)
        training = self.kapp.training.running
        try:
            job = self._new_job()
            if not job.run_dir.is_dir():
                status.update("Training is running: waiting for the first saved epoch…" if training else
                              f"No training run yet in {self.session.workspace.display(job.run_dir)}: "
                              "train first (5), then g builds the epoch × weight grid here.")
                return
            job.prepare()
        except UserError as err:
            if training:  # no LoRA saved yet: not a mistake, just early
                status.update("Training is running: waiting for the first saved epoch…")
            else:
                status.update(f"{err}")
            return
        self.job = self.job if self.job is not None and self.job.rows == job.rows else job
        if self.judgement is None:
            self.judgement = load_last_judgement(job.run_dir, job.rows)
        chosen = self._chosen_label(job)
        pick = (self.judgement or {}).get("recommendation")
        hint = (f" · judged: keep {pick['label']} at {pick['weight']:g} (e chooses it)" if pick
                else " · j judges every cell")
        status.update(
            f"run {self.session.workspace.display(job.run_dir)}: {len(job.rows)} LoRA(s) "
            f"({', '.join(r[0] for r in job.rows)}) · g builds the grid{hint}{chosen}"
        )
        self._draw_table(self.job)

    def _chosen_label(self, job: GridJob) -> str:
        import json

        record = job.run_dir / "final" / "chosen.json"
        try:
            return f" · chosen: {json.loads(record.read_text(encoding='utf-8'))['chosen']}"
        except (OSError, ValueError, KeyError):
            return ""

    def _new_job(self) -> GridJob:
        cfg = self.session.config_document().resolved_config()
        weights = parse_weights(self.query_one("#gr-weights", Input).value)
        from tui.session import LinkedEvent

        return GridJob(cfg, weights, cancel=LinkedEvent(self.session.stop_event))

    def _draw_table(self, job: GridJob) -> None:
        table = self.query_one("#gr-table", DataTable)
        table.clear(columns=True)
        # Fixed width: after clear(columns=True) DataTable kept drawing the header's width ("epoc").
        table.add_column("LoRA", key="label", width=max([4, *(len(label) for label, _ in job.rows)]))
        for w in job.weights:  # fixed width too: a judged cell holds "0.93★"
            table.add_column(f"w {w:g}", key=f"w{w:g}", width=max(5, len(f"w {w:g}")))
        for r, (label, _path) in enumerate(job.rows):
            table.add_row(label, *(self._cell_text(job, r, c) for c in range(len(job.weights))))
        pick = self._recommended(job)
        if pick is not None:
            table.move_cursor(row=pick[0], column=pick[1] + 1)  # "choose" defaults to the recommendation

    def _judged(self, job: GridJob) -> dict[tuple[int, int], dict[str, Any]]:
        return judged_cells(self.judgement, job.rows, job.weights) if self.judgement else {}

    def _recommended(self, job: GridJob) -> tuple[int, int] | None:
        return recommended_cell(self.judgement, job.rows, job.weights) if self.judgement else None

    def _cell_text(self, job: GridJob, r: int, c: int) -> Text:
        cell = self._judged(job).get((r, c))
        if cell is not None:  # heatmap: the score on its colour, the recommendation starred
            star = "★" if self._recommended(job) == (r, c) else " "
            return Text(f"{cell['score']:.2f}{star}", style=f"bold black on {heat_colour(cell['score'])}")
        return Text("■", style="green") if (r, c) in job.cells else Text("·", style="dim")

    # -- running -----------------------------------------------------------------------------------
    def _prepared_job(self):
        """A grid job for the workspace's last run with its LoRAs found, or None (error shown)."""
        try:
            job = self._new_job()
            job.prepare()
        except UserError as err:
            self.show_error(err)
            return None
        return job

    def action_build(self) -> None:
        if self.running:
            self.notify("The grid is already rendering (c cancels).")
            return
        if self.kapp.training.running:
            self.notify("Training is running; build the grid when it has finished.", severity="warning")
            return
        job = self._prepared_job()
        if job is None:
            return
        self.job, self.result, self.running = job, None, True
        self._draw_table(job)
        bar = self.query_one("#gr-progress", ProgressBar)
        bar.display = True
        bar.update(total=None, progress=0)
        self.query_one("#gr-status", Static).update("loading the base model and rendering…")
        self.run_job(job.run, self._built, group="grid", description="XY grid", failed=self._job_failed)
        self._timer.resume()

    def poll(self) -> None:
        if self.judging is not None:
            self._poll_judge()
            return
        job = self.job
        if job is None:
            return
        bar = self.query_one("#gr-progress", ProgressBar)
        if job.total:
            bar.update(total=job.total, progress=job.done)
        table = self.query_one("#gr-table", DataTable)
        for (r, c) in list(job.cells):
            if r < table.row_count and c + 1 < len(table.columns):
                table.update_cell_at((r, c + 1), self._cell_text(job, r, c))
        if self.running and not any(w.group == "grid" and w.is_running for w in self.app.workers):
            self.running = False  # the job failed; run_job has shown the error
            self._timer.pause()
            bar.display = False
        self._show_cell()

    def _job_failed(self, err: BaseException) -> None:
        """A grid or judgement that failed (run_job shows the panel): back to the idle screen, so the
        status no longer says "rendering…" and g/j start again."""
        self.running = False
        self.judging = None
        self._timer.pause()
        self.query_one("#gr-progress", ProgressBar).display = False
        self.refresh_view()

    def _built(self, result: Any) -> None:
        self.running = False
        self._timer.pause()
        self.result = result
        self.session.last_grid = result
        self.poll()
        self.query_one("#gr-progress", ProgressBar).display = False
        where = ", ".join(self.session.workspace.display(p) for p in result.grid_paths.values())
        state = "cancelled (finished cells kept)" if result.cancelled else "done"
        self.query_one("#gr-status", Static).update(
            f"grid {state}: {where or 'no image'} · arrows browse · v view large · e or Enter chooses the epoch"
        )
        self.query_one("#gr-table", DataTable).focus()

    # -- judging ---------------------------------------------------------------------------------------
    def action_judge(self) -> None:
        if self.running or self.judging is not None:
            self.notify("A grid or judgement is already running (c cancels).")
            return
        if self.kapp.training.running:
            self.notify("Training is running; judge the run when it has finished.", severity="warning")
            return
        job = self._prepared_job()
        if job is None:
            return
        from tui.session import LinkedEvent

        self.job = job
        self.judging = JudgeJob(job.cfg, job.weights, cancel=LinkedEvent(self.session.stop_event))
        bar = self.query_one("#gr-progress", ProgressBar)
        bar.display = True
        bar.update(total=None, progress=0)
        self.query_one("#gr-status", Static).update("judging: rendering the evaluation grid, then tagging…")
        self.run_job(self.judging.run, self._judged_done, group="judge", description="judge",
                     failed=self._job_failed)
        self._timer.resume()

    def _poll_judge(self) -> None:
        j = self.judging
        bar = self.query_one("#gr-progress", ProgressBar)
        if j.total:
            bar.update(total=j.total, progress=j.done)
            self.query_one("#gr-status", Static).update(f"judging: {j.stage} {j.done}/{j.total}…")
        if not any(w.group == "judge" and w.is_running for w in self.app.workers):
            self.judging = None  # failed; run_job has shown the error
            self._timer.pause()
            bar.display = False

    def _judged_done(self, judgement: dict[str, Any]) -> None:
        self.judging = None
        self._timer.pause()
        self.judgement = judgement
        self.query_one("#gr-progress", ProgressBar).display = False
        if self.job is not None:
            self._draw_table(self.job)
        pick = judgement.get("recommendation")
        self.query_one("#gr-status", Static).update(
            Text(pick["reason"] + "  · e chooses the starred cell" if pick else "Judged: no LoRA cell to recommend."))
        self.query_one("#gr-table", DataTable).focus()
        self._show_cell()

    def action_cancel(self) -> None:
        if self.judging is not None:
            self.judging.cancel.set()
            self.notify("cancelling the judgement…")
            return
        if self.running and self.job is not None:
            self.job.cancel.set()
            self.notify("cancelling after the current image…")

    # -- browsing ----------------------------------------------------------------------------------
    @on(DataTable.CellHighlighted, "#gr-table")
    def _highlighted(self, event: DataTable.CellHighlighted) -> None:
        self._show_cell()

    @on(DataTable.CellSelected, "#gr-table")
    def _selected_cell(self, event: DataTable.CellSelected) -> None:
        self.action_choose()

    def _selected(self) -> tuple[int, int, Any] | None:
        if self.job is None:
            return None
        table = self.query_one("#gr-table", DataTable)
        r, c = table.cursor_coordinate.row, table.cursor_coordinate.column - 1
        return r, c, self.job.cells.get((r, c)) if c >= 0 else None

    def _show_cell(self) -> None:
        sel = self._selected()
        title = self.query_one("#gr-cell", Static)
        preview = self.query_one(ImagePreview)
        judged = self._show_breakdown()
        if sel is None or sel[2] is None:
            if not judged:
                title.update("")
                preview.show(None, "no cell selected")
            else:  # no sample grid rendered: show the judge's own image of this cell
                image = self._judged_image(sel)
                if preview.source != image:
                    preview.show(image, "no image")
            return
        if judged:
            cell = sel[2]
            if preview.source is not cell.image:
                preview.show(cell.image)
            return
        r, c, cell = sel
        title.update(f"{cell.label} × weight {cell.weight:g}")
        if preview.source is not cell.image:
            preview.show(cell.image)

    def _judged_image(self, sel: tuple[int, int, Any] | None) -> Any:
        if sel is None or self.job is None:
            return None
        cell = self._judged(self.job).get((sel[0], sel[1]))
        images = (cell or {}).get("images") or []
        return self.job.run_dir / "judge" / images[0] if images else None

    def _show_breakdown(self) -> bool:
        """The judged metrics of the selected cell in the title line (True when shown)."""
        pane = self.query_one("#gr-breakdown", Static)
        pane.update("")
        if self.job is None or not self.judgement:
            return False
        table = self.query_one("#gr-table", DataTable)
        r, c = table.cursor_coordinate.row, table.cursor_coordinate.column - 1
        cell = self._judged(self.job).get((r, c))
        if cell is None:
            return False
        star = " ★ recommended" if self._recommended(self.job) == (r, c) else ""
        self.query_one("#gr-cell", Static).update(Text(f"{cell['label']} × weight {cell['weight']:g}{star}"))
        pane.update(Text(breakdown(cell)))
        return True

    def action_view(self) -> None:
        sel = self._selected()
        if sel is None or sel[2] is None:
            return
        cell = sel[2]
        self.app.push_screen(LargeImageScreen(cell.image, f"{cell.label} × weight {cell.weight:g}",
                                              self.session.image_mode))

    def action_share(self) -> None:
        sel = self._selected()
        if sel is not None and sel[2] is not None:
            self.share_image(sel[2].path)
        else:
            self.share_image(self._judged_image(sel))

    def action_focus_weights(self) -> None:
        self.query_one("#gr-weights", Input).focus()

    @on(Input.Submitted, "#gr-weights")
    def _weights_submitted(self, event: Input.Submitted) -> None:
        self.result = None
        self.job = None
        self.judgement = None
        self.refresh_view()
        self.query_one("#gr-table", DataTable).focus()

    def action_choose(self) -> None:
        job = self.job or self._prepared_job()
        if job is None:
            return
        row = self.query_one("#gr-table", DataTable).cursor_coordinate.row
        if not 0 <= row < len(job.rows):
            return
        label, path = job.rows[row]
        name = job.cfg.output.output_name

        def copy(overwrite: bool) -> None:
            try:
                target = choose_epoch(path, label, job.run_dir, name, overwrite=overwrite)
            except FileExistsError as exists:
                self.app.push_screen(
                    ConfirmScreen(f"{exists} already holds another chosen LoRA. Replace it with {label}?"),
                    lambda yes: copy(True) if yes else None,
                )
                return
            except OSError as err:
                self.show_error(UserError(f"Cannot copy {path} as the final LoRA: {err}."))
                return
            self.notify(f"{label} chosen: copied to {self.session.workspace.display(target)}")
            self.query_one("#gr-status", Static).update(f"chosen: {label} → {self.session.workspace.display(target)}")

        copy(False)
