"""What every mode screen shares: the mode bar, the footer, background jobs and error display."""

from __future__ import annotations

import traceback
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen

from tagging.errors import UserError
from tui.widgets.errorpanel import ErrorPanel
from tui.widgets.footer import FittedFooter
from tui.widgets.modebar import ModeBar

SAVE_IN_BACKGROUND_FROM = 200  # dirty captions; below this a save is quicker than the modal box

if TYPE_CHECKING:
    from tui.app import KazariApp
    from tui.session import Session


class KazariScreen(Screen):
    MODE = ""
    MAIN = "DataTable"  # what Escape returns focus to from a text field (so 1..6 switch modes again)
    AUTO_FOCUS = "DataTable"
    BINDINGS = [Binding("escape", "leave_field", "Leave field", show=False, id="leave-field")]

    @property
    def kapp(self) -> KazariApp:
        return self.app  # type: ignore[return-value]

    @property
    def session(self) -> Session:
        return self.kapp.session

    def compose(self) -> ComposeResult:
        yield ModeBar(self.MODE)
        yield ErrorPanel()
        yield from self.compose_body()
        yield FittedFooter(compact=True)

    def compose_body(self) -> ComposeResult:
        return iter(())

    def action_leave_field(self) -> None:
        # Escape dismisses a shown error panel even when the focus moved on (e.g. the screen's
        # auto-focus ran after a job that failed at once); the panel's dismiss comes back here.
        panels = self.query(ErrorPanel)
        if panels and panels.first().shown:
            panels.first().action_dismiss()
            return
        targets = self.query(self.MAIN)
        if targets:
            targets.first().focus()

    def on_screen_resume(self) -> None:
        self.refresh_view()
        self.update_status()

    def refresh_view(self) -> None:
        """Redraw from the session (called when the mode becomes active and after actions)."""

    def on_dataset_loaded(self) -> None:
        self.refresh_view()
        self.update_status()

    def update_status(self) -> None:
        ds = self.session.dataset
        status = ""
        if ds is not None:
            dirty = len(ds.dirty_keys)
            if dirty:
                status = f"● {dirty} unsaved caption{'s' if dirty != 1 else ''} (s saves on Tags)"
        doc = self.session.config
        if doc is not None and doc.dirty:
            status = (status + "  ● config unsaved (^s on Config)").strip()
        training = self.kapp.training
        if training.running:
            status = (status + ("  ⏸ training paused" if training.paused else "  ▶ training")).strip()
        self.query_one(ModeBar).redraw(status)

    def share_image(self, path: Path | None) -> None:
        """The full-size image for the user's own machine: its path to the clipboard (OSC 52) and a
        127.0.0.1 URL (reached with ssh -L), since a terminal preview cannot show detail."""
        from tui.image_share import osc52, ssh_hint

        if path is None or not Path(path).is_file():
            self.notify("No saved image here yet.", severity="warning")
            return
        url = self.session.share_image(Path(path))
        driver = getattr(self.app, "_driver", None)  # Textual has no public raw write; OSC 52 needs one
        if driver is not None:
            driver.write(osc52(str(Path(path).resolve())))
        port = self.session.image_server.port
        self.notify(f"Path copied (OSC 52). Full size at {url} - from your machine run "
                    f"`{ssh_hint(port)}` and open that URL.", title="image shared", timeout=30)

    def show_error(self, err: BaseException) -> None:
        """User mistakes as a one-paragraph notification; bugs logged with traceback, shown briefly."""
        if isinstance(err, UserError):
            self.notify(str(err), severity="error", timeout=12)
        else:
            self.session.sink.write("".join(traceback.format_exception(err)), "error")
            self.notify(
                f"Internal error: {type(err).__name__}: {err}. Details in the log (ctrl+l).",
                severity="error",
                timeout=12,
            )

    def show_job_error(self, what: str, err: BaseException) -> None:
        """A failed job: the notification plus the panel that stays until dismissed."""
        self.show_error(err)
        message = str(err) if isinstance(err, UserError) else (
            f"internal error {type(err).__name__}: {err} (details in the log, ctrl+l)")
        panels = self.query(ErrorPanel)
        if panels:
            panels.first().show(what, message)

    def run_job(
        self,
        fn: Callable[[], Any],
        done: Callable[[Any], None] | None = None,
        *,
        group: str,
        description: str = "",
        failed: Callable[[BaseException], None] | None = None,
    ) -> None:
        """Run blocking ``fn`` in a thread worker; ``done(result)`` then runs on the UI thread.

        A failure always ends in a visible state: the error panel (it stays until dismissed) and
        ``failed(err)``, where the screen puts itself back to usable.
        """

        def report(err: BaseException) -> None:
            self.show_job_error(description or group, err)
            if failed is not None:
                failed(err)

        def body() -> None:
            try:
                result = fn()
            except BaseException as err:  # noqa: BLE001 - reported to the user, never swallowed
                self.app.call_from_thread(report, err)
                return
            if done is not None:
                self.app.call_from_thread(done, result)

        # Workers belong to the app, so switching modes never cancels a running job.
        self.app.run_worker(
            body, thread=True, group=group, exclusive=True, exit_on_error=False, description=description
        )

    # -- dataset history and saving, shared by the Dataset and Tags screens --------------------------
    def do_undo(self) -> None:
        ds = self.session.dataset
        if ds is None:
            return
        try:
            change = ds.undo()
        except UserError as err:
            self.show_error(err)
            return
        self.notify(f"undone: {change.label}" if change is not None else "nothing to undo")
        self.after_history_change()

    def do_redo(self) -> None:
        ds = self.session.dataset
        if ds is None:
            return
        try:
            change = ds.redo()
        except UserError as err:
            self.show_error(err)
            return
        self.notify(f"redone: {change.label}" if change is not None else "nothing to redo")
        self.after_history_change()

    def after_history_change(self) -> None:
        self.refresh_view()
        self.update_status()

    def do_save(self) -> bool:
        """Save the captions. True when saved; False when an error or an overwrite question is shown."""
        from tagging.errors import ConflictError

        ds = self.session.dataset
        if ds is None:
            return False
        try:
            report = ds.save()
        except ConflictError as err:
            from tui.widgets.dialogs import ConfirmScreen

            def answered(yes: bool | None) -> None:
                if yes:
                    try:
                        self._saved(ds.save(force=True))
                    except UserError as again:
                        self.show_error(again)

            self.app.push_screen(ConfirmScreen(f"{err}\n\nOverwrite those files with your edits?"), answered)
            return False
        except UserError as err:
            self.show_error(err)
            return False
        self._saved(report)
        return True

    def save_captions(self, *, force: bool = False) -> None:
        """The save key: small saves inline; big ones (each file is written and fsynced, ~0.7 s per
        1,000) in a thread worker behind a modal "saving" box, so the UI never freezes and no edit
        can race with the writes."""
        from tagging.errors import ConflictError
        from tui.widgets.dialogs import BusyScreen, ConfirmScreen

        ds = self.session.dataset
        if ds is None:
            return
        dirty = len(ds.dirty_keys)
        if dirty < SAVE_IN_BACKGROUND_FROM and not force:
            self.do_save()
            return
        busy = BusyScreen(f"Saving {dirty} caption file(s)…")
        self.app.push_screen(busy)

        def finish(report: Any, err: BaseException | None) -> None:
            busy.dismiss()
            if isinstance(err, ConflictError):
                self.app.push_screen(
                    ConfirmScreen(f"{err}\n\nOverwrite those files with your edits?"),
                    lambda yes: self.save_captions(force=True) if yes else None,
                )
            elif err is not None:
                self.show_error(err)
            else:
                self._saved(report)

        def body() -> None:
            try:
                report = ds.save(force=force)
            except BaseException as err:  # noqa: BLE001 - shown to the user on the UI thread
                self.app.call_from_thread(finish, None, err)
            else:
                self.app.call_from_thread(finish, report, None)

        self.app.run_worker(body, thread=True, group="save", exclusive=True, exit_on_error=False,
                            description="saving captions")

    def _saved(self, report: Any) -> None:
        written = getattr(report, "written", None)
        count = len(written) if written is not None else "all changed"
        self.notify(f"saved {count} caption file(s)")
        self.after_history_change()
