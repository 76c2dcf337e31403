"""The Train screen: the live dashboard of the in-process training run.

The run lives in the App's TrainingController (a thread worker); this screen only drains the event
bridge on a 4 Hz timer and redraws, so the trainer never waits for the UI.
"""

from __future__ import annotations

import time
from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import OptionList, ProgressBar, Static
from textual.widgets.option_list import Option
from textual_plotext import PlotextPlot

from tagging.errors import UserError
from tui.screens.base import KazariScreen
from tui.screens.train.state import RunView, downsample
from tui.widgets.dialogs import ConfirmScreen
from tui.widgets.preview import ImagePreview

UI_HZ = 4  # status/progress redraws per second while a run is active
PLOT_EVERY_S = 1.0  # curves redraw at most this often: plotext rendering is the UI's costliest work,
# and UI work competes with the trainer thread for the GIL


class TrainScreen(KazariScreen):
    MODE = "train"
    MAIN = "#tr-checkpoints"
    AUTO_FOCUS = "#tr-checkpoints"
    DEFAULT_CSS = """
    TrainScreen #tr-status { height: 2; padding: 0 1; }
    TrainScreen ProgressBar { padding: 0 1; height: 1; }
    TrainScreen #tr-plots { width: 1fr; }
    TrainScreen #tr-loss { height: 2fr; }
    TrainScreen #tr-lr { height: 1fr; }
    TrainScreen #tr-side { width: 32; }
    TrainScreen #tr-sample { height: 1fr; min-height: 6; }
    TrainScreen #tr-sample-title, TrainScreen #tr-ckpt-title { height: 1; }
    TrainScreen #tr-checkpoints { height: 1fr; border: none; }
    TrainScreen #tr-warn { height: auto; max-height: 3; color: $warning; padding: 0 1; }
    """
    BINDINGS = [
        Binding("t", "start", "Train", id="tr-start"),
        Binding("x", "stop", "Stop+save", id="tr-stop"),
        Binding("s", "save_now", "Save now", id="tr-save"),
        Binding("m", "sample_now", "Sample now", id="tr-sample"),
        Binding("space", "pause", "Pause", id="tr-pause"),
        Binding("o", "share", "Share sample", id="tr-share"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.view = RunView()
        self._timer: Any = None
        self._plotted_at = 0.0
        self._status_text = ""
        self._warn_text = ""
        self._reported_run: Any = None  # the run whose failure the error panel has shown

    def compose_body(self) -> ComposeResult:
        yield Static("no run yet — t starts training with the Config screen's settings", id="tr-status")
        yield ProgressBar(total=None, show_eta=False, id="tr-progress")
        with Horizontal():
            with Vertical(id="tr-plots"):
                yield PlotextPlot(id="tr-loss")
                yield PlotextPlot(id="tr-lr")
            with Vertical(id="tr-side"):
                yield Static("latest sample", id="tr-sample-title", classes="pane-title")
                yield ImagePreview(self.session.image_mode, id="tr-sample")
                yield Static("checkpoints", id="tr-ckpt-title", classes="pane-title")
                yield OptionList(id="tr-checkpoints")
        yield Static("", id="tr-warn")

    def on_mount(self) -> None:
        self.query_one("#tr-progress", ProgressBar).display = False
        self.query_one(ImagePreview).show(None, "no sample yet")
        self._draw_plots()
        self._timer = self.set_interval(1 / UI_HZ, self.poll, pause=True)
        if self.kapp.training.running:
            self._timer.resume()

    # -- the 4 Hz pull ---------------------------------------------------------------------------------
    def poll(self) -> None:
        bridge = self.kapp.training.bridge
        drained = bridge.drain() if bridge is not None else None
        if drained is not None:
            for event in self.view.fold(drained):
                self._announce(event)
            self._redraw()
        if not self.kapp.training.running and (bridge is None or not bridge.dirty):
            self._timer.pause()
            self._redraw(final=True)
            self._report_failure()
            self.update_status()

    def _report_failure(self) -> None:
        """A run that ended in failure (a Failed event, or an exception out of the run thread) ends in
        the error panel once; the screen is idle again, so t starts a new run."""
        training = self.kapp.training
        if training.run is None or training.run is self._reported_run:
            return
        failed, err = self.view.failed, training.error
        if failed is None and err is None:
            return
        self._reported_run = training.run
        if failed is None:  # raised before the trainer could say so: the status would stay "starting…"
            self._status_text = f"✗ failed: {err} · t starts a new run"
            self.query_one("#tr-status", Static).update(Text(self._status_text))
            self.show_job_error("training", err)
            return
        if err is not None and not isinstance(err, UserError):  # a bug: keep its traceback in the log
            import traceback

            self.session.sink.write("".join(traceback.format_exception(err)), "error")
        self.show_job_error("training", UserError(failed.message))

    def _announce(self, event: Any) -> None:
        from trainer.events import CheckpointSaved, Failed, Finished, SampleReady, TrainWarning

        if isinstance(event, CheckpointSaved):
            self.notify(f"checkpoint saved: {event.path.name}")
        elif isinstance(event, SampleReady):
            self.query_one(ImagePreview).show(event.image)
            self.query_one("#tr-sample-title", Static).update(f"sample e{event.epoch} s{event.step}: {event.prompt}")
        elif isinstance(event, TrainWarning):
            self.session.sink.line(event.message, "trainer")
        elif isinstance(event, Finished):
            self.notify("training stopped (checkpoint saved)" if event.stopped_early else "training finished")
            self._remember_speed()
        elif isinstance(event, Failed):
            pass  # the status line says it now; the error panel follows when the run thread has ended

    def _remember_speed(self) -> None:
        step = self.view.step
        if step is not None and step.it_per_s > 0:
            self.session.remember_speed(1.0 / step.it_per_s)

    def _redraw(self, final: bool = False) -> None:
        view = self.view
        status = view.status_line(self.kapp.training.paused)
        if status != self._status_text:
            self._status_text = status
            # Fixed-size box, so no layout pass: a layout would re-render the plots too.
            self.query_one("#tr-status", Static).update(Text(status), layout=False)  # no markup: "[model]"
        bar = self.query_one("#tr-progress", ProgressBar)
        if view.total_steps:
            bar.display = True
            bar.update(total=view.total_steps, progress=view.step.step if view.step else 0)
        now = time.monotonic()
        if view.points_changed and (final or now - self._plotted_at >= PLOT_EVERY_S):
            view.points_changed = False
            self._plotted_at = now
            self._draw_plots()
        ckpts = self.query_one("#tr-checkpoints", OptionList)
        if ckpts.option_count != len(view.checkpoints):
            ckpts.clear_options()
            ckpts.add_options(
                [Option(f"e{c.epoch} s{c.step} {c.path.name} ({c.kind})") for c in reversed(view.checkpoints)]
            )
        warn = "\n".join(f"⚠ {w}" for w in view.warnings[-2:])
        if warn != self._warn_text:
            self._warn_text = warn
            self.query_one("#tr-warn", Static).update(warn)

    def _draw_plots(self) -> None:
        loss_plot = self.query_one("#tr-loss", PlotextPlot)
        lr_plot = self.query_one("#tr-lr", PlotextPlot)
        width = max(20, loss_plot.size.width * 2)
        for plot in (loss_plot, lr_plot):
            plot.plt.clear_data()
            plot.plt.clear_figure()
        lp, rp = loss_plot.plt, lr_plot.plt
        lp.title("loss (raw, smoothed)")
        rp.title("learning rate")
        v = self.view
        if v.steps:
            xs, ys = downsample(v.steps, v.loss, width)
            lp.plot(xs, ys, marker="braille", label="raw")
            xs, ys = downsample(v.steps, v.smoothed, width)
            lp.plot(xs, ys, marker="braille", label="smoothed")
            xs, ys = downsample(v.steps, v.lr, width)
            rp.plot(xs, ys, marker="braille")
        loss_plot.refresh()
        lr_plot.refresh()

    # -- actions -----------------------------------------------------------------------------------
    def action_start(self) -> None:
        training = self.kapp.training
        if training.running:
            self.notify("A run is already in progress.")
            return
        try:
            doc = self.session.config_document()
            cfg = doc.resolved_config()
        except UserError as err:
            self.show_error(err)
            return
        ds = self.session.dataset
        dirty = len(ds.dirty_keys) if ds is not None else 0
        if dirty:

            def answered(yes: bool | None) -> None:
                if yes and self.do_save():  # not saved (an error or a question is shown): no start
                    self._offer_resume_or_start(cfg)

            self.app.push_screen(
                ConfirmScreen(f"{dirty} caption(s) are unsaved; training reads the files. Save them and start?"),
                answered,
            )
            return
        self._offer_resume_or_start(cfg)

    def _offer_resume_or_start(self, cfg: Any) -> None:
        """A stopped (or killed) run of this output is resumed rather than restarted, if the user agrees."""
        from trainer.resume import find_resume_state

        found = find_resume_state(cfg)
        if found is None:
            self._start(cfg)
            return

        def answered(yes: bool | None) -> None:
            self._start(cfg, resume_from=found.path if yes else None)

        self.app.push_screen(ConfirmScreen(
            f"The stopped run of {cfg.output.output_name!r} can be resumed from {found.path.name} (step "
            f"{found.step}, {found.epoch} epoch(s) complete). Resume the stopped run? (n starts a fresh run; "
            "its earlier files are moved to .kazari/previous)"), answered)

    def _start(self, cfg: Any, resume_from: Any = None) -> None:
        try:
            self.kapp.training.start(cfg, config_path=self.session.config_document().path, resume_from=resume_from)
        except Exception as err:  # noqa: BLE001 - shown in the panel; the screen stays idle, t tries again
            self.show_job_error("starting training", err)
            return
        self.view = RunView()
        self.query_one(ImagePreview).show(None, "no sample yet")
        self.query_one("#tr-checkpoints", OptionList).clear_options()
        dirty_note = " (unsaved config edits included)" if self.session.config.dirty else ""
        self.query_one("#tr-status", Static).update("starting…" + dirty_note)
        self._draw_plots()
        self._timer.resume()
        self.update_status()

    def action_stop(self) -> None:
        if self.kapp.training.running:
            self.kapp.training.stop()
            self.notify("stopping after this step; a checkpoint is saved…")

    def action_save_now(self) -> None:
        if self.kapp.training.running:
            self.kapp.training.save_now()
            self.notify("a checkpoint will be saved after this step")

    def action_share(self) -> None:
        samples = self.view.samples
        self.share_image(samples[-1].path if samples else None)

    def action_sample_now(self) -> None:
        if self.kapp.training.running:
            self.kapp.training.sample_now()
            self.notify("samples will be rendered after this step")

    def action_pause(self) -> None:
        if self.kapp.training.running:
            paused = self.kapp.training.toggle_pause()
            self.notify("paused" if paused else "resumed")
            self._redraw()
            self.update_status()
