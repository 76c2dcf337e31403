"""The Dataset screen: folders and images (filterable by a tag query), a preview of the selected
image and its tags in order, with per-image tag edits, trash and lint findings."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.suggester import SuggestFromList
from textual.widgets import DataTable, Input, OptionList, Static
from textual.widgets.option_list import Option

from tagging.errors import UserError
from tui.screens.base import KazariScreen
from tui.screens.dataset.findings import FindingsScreen
from tui.widgets.dialogs import ConfirmScreen, PromptScreen
from tui.widgets.preview import ImagePreview
from tui.widgets.tables import reset_columns


class DatasetScreen(KazariScreen):
    MODE = "dataset"
    DEFAULT_CSS = """
    DatasetScreen #ds-left { width: 40%; min-width: 30; }
    DatasetScreen #ds-right { width: 1fr; }
    DatasetScreen #ds-filter { height: 1; border: none; padding: 0 1; }
    DatasetScreen #ds-preview { height: 1fr; min-height: 6; }
    DatasetScreen #ds-tags { height: 1fr; border: none; }
    DatasetScreen #ds-lint { height: 1; padding: 0 1; }
    /* auto: a "no dataset" message wraps instead of being cut off at the screen's edge */
    DatasetScreen #ds-summary { height: auto; max-height: 16; padding: 0 1; }
    """
    BINDINGS = [
        Binding("slash", "focus_filter", "Filter", id="ds-filter"),
        Binding("n", "step(1)", "Next", id="ds-next"),
        Binding("p", "step(-1)", "Prev", id="ds-prev"),
        Binding("a", "add_tag", "Add tag", id="ds-add"),
        Binding("d,delete", "delete_tag", "Del tag", id="ds-delete"),
        Binding("s", "save", "Save", id="ds-save"),
        Binding("u", "undo", "Undo", id="ds-undo"),
        Binding("r", "redo", "Redo", id="ds-redo"),
        Binding("x", "trash_image", "Trash", id="ds-trash"),
        Binding("f", "findings", "Findings", id="ds-findings"),
        Binding("w", "mark_wrong", "Wrong", id="ds-wrong"),
        Binding("K,shift+up", "move_tag(-1)", "Tag up", id="ds-up"),
        Binding("J,shift+down", "move_tag(1)", "Tag down", id="ds-down"),
        Binding("o", "share", "Share image", id="ds-share"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.visible_keys: list[str] = []
        self.current_key: str | None = None
        self.query_text = ""
        self._rows_shown: list[tuple[str, str]] | None = None

    # -- layout ------------------------------------------------------------------------------------
    def compose_body(self) -> ComposeResult:
        with Horizontal():
            with Vertical(id="ds-left"):
                yield Input(placeholder="/ filter: 1girl AND NOT hat*", id="ds-filter", compact=True)
                yield Static("", id="ds-summary")
                table: DataTable = DataTable(id="ds-images", cursor_type="row", zebra_stripes=False)
                yield table
                yield Static("", id="ds-lint")
            with Vertical(id="ds-right"):
                yield ImagePreview(self.session.image_mode, id="ds-preview")
                yield Static("tags", classes="pane-title", id="ds-tags-title")
                yield OptionList(id="ds-tags")

    def on_mount(self) -> None:
        table = self.query_one("#ds-images", DataTable)
        reset_columns(table, [("image", "image", 5), ("tags", "n", len(_count_cell(0, True, True)))])
        table.focus()
        if self.session.dataset is not None:
            self.on_dataset_loaded()

    @property
    def findings(self) -> list[Any]:
        return self.session.findings

    def on_findings(self) -> None:
        self.refresh_view()

    # -- drawing -----------------------------------------------------------------------------------
    def refresh_view(self) -> None:
        ds = self.session.dataset
        summary = self.query_one("#ds-summary", Static)
        if ds is None:
            summary.update(self.session.dataset_error or "no dataset loaded")
            return
        table = self.query_one("#ds-images", DataTable)
        if not table.size.width:
            # Not laid out yet (the dataset can load before the first layout): rows added to an
            # unsized DataTable may be drawn with stale widths, so fill it after the first refresh.
            self.call_after_refresh(self.refresh_view)
            return
        predicate = self._predicate()
        keys = [img.key for img in ds.images if predicate is None or predicate(img.tags)]
        self.visible_keys = keys
        flagged = {f.key for f in self.findings if f.key}
        keep = self.current_key
        rows = []
        for key in keys:
            img = ds.image(key)
            rows.append((key, _count_cell(len(img.tags), img.has_changes, key in flagged)))
        # Rebuilding a 10,000-row table costs a second: only do it when a row actually changed.
        # (Text cells, two columns: DataTable measures every cell, and markup parsing is the slow part.)
        if rows != self._rows_shown:
            self._rows_shown = rows
            reset_columns(table, [("image", "image", max((len(k) for k in keys), default=5)),
                                  ("tags", "n", len(_count_cell(0, True, True)))])
            table.add_rows([(Text(k), Text(n)) for k, n in rows])
        folders = " · ".join(f"{f.name} ×{f.repeats} ({len(f.images)})" for f in ds.folders)
        shown = f"{len(keys)}/{len(ds.images)} images" if predicate else f"{len(ds.images)} images"
        summary.update(f"{shown} │ {folders}")
        lint_line = self.query_one("#ds-lint", Static)
        if self.findings:
            worst = sum(1 for f in self.findings if getattr(f, "severity", "") == "error")
            lint_line.update(f"lint: {len(self.findings)} ({worst} errors) · f lists")
        else:
            lint_line.update("lint: running…" if self.kapp.lint_pending else
                             "lint: failed (see the error)" if self.session.lint_error else "lint: no findings")
        if keep in keys:
            table.move_cursor(row=keys.index(keep))
        self.show_image(keys[table.cursor_row] if keys else None)

    def _predicate(self):
        if not self.query_text.strip():
            return None
        from tagging.query import compile_query

        try:
            return compile_query(self.query_text)
        except UserError as err:
            self.notify(str(err), severity="error")
            return None

    @staticmethod
    def _finding_key(finding: Any) -> str | None:
        return getattr(finding, "key", None)

    def action_share(self) -> None:
        ds = self.session.dataset
        self.share_image(ds.image(self.current_key).path if ds is not None and self.current_key else None)

    def show_image(self, key: str | None) -> None:
        self.current_key = key
        ds = self.session.dataset
        preview = self.query_one(ImagePreview)
        title = self.query_one("#ds-tags-title", Static)
        tags = self.query_one("#ds-tags", OptionList)
        highlighted = tags.highlighted
        tags.clear_options()
        if ds is None or key is None:
            preview.show(None, "no image selected")
            title.update("tags")
            return
        img = ds.image(key)
        preview.show(img.path)
        w, h = img.size if img.path.is_file() else (0, 0)
        title.update(Text(f"{key}  {w}×{h}  {len(img.tags)} tags"))
        tags.add_options([Option(Text(f"{i + 1:>2}. {t}"), id=f"t{i}") for i, t in enumerate(img.tags)])
        if img.tags:
            tags.highlighted = min(highlighted or 0, len(img.tags) - 1)

    # -- events ------------------------------------------------------------------------------------
    @on(DataTable.RowHighlighted, "#ds-images")
    def _row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if 0 <= event.cursor_row < len(self.visible_keys):
            key = self.visible_keys[event.cursor_row]
            if key != self.current_key:
                self.show_image(key)

    @on(Input.Submitted, "#ds-filter")
    def _filter_submitted(self, event: Input.Submitted) -> None:
        self.query_text = event.value
        self.refresh_view()
        self.query_one("#ds-images", DataTable).focus()

    # -- actions -----------------------------------------------------------------------------------
    def action_focus_filter(self) -> None:
        self.query_one("#ds-filter", Input).focus()

    def action_step(self, delta: int) -> None:
        table = self.query_one("#ds-images", DataTable)
        if self.visible_keys:
            table.move_cursor(row=max(0, min(len(self.visible_keys) - 1, table.cursor_row + delta)))

    def _selected_tag(self) -> tuple[int, str] | None:
        ds = self.session.dataset
        if ds is None or self.current_key is None:
            return None
        index = self.query_one("#ds-tags", OptionList).highlighted
        tags = ds.image(self.current_key).tags
        if index is None or not (0 <= index < len(tags)):
            return None
        return index, tags[index]

    def _apply(self, op: Any, keys: list[str] | None) -> None:
        try:
            self.session.dataset.apply(op, keys=keys)
        except UserError as err:
            self.show_error(err)
            return
        self._redraw_current()

    def _redraw_current(self) -> None:
        table = self.query_one("#ds-images", DataTable)
        ds = self.session.dataset
        if self.current_key is not None and self.current_key in self.visible_keys:
            img = ds.image(self.current_key)
            row = self.visible_keys.index(self.current_key)
            flagged = any(f.key == self.current_key for f in self.findings)
            cell = _count_cell(len(img.tags), img.has_changes, flagged)
            table.update_cell_at((row, 1), Text(cell))
            if self._rows_shown is not None:
                self._rows_shown[row] = (self.current_key, cell)
        self.show_image(self.current_key)
        self.update_status()

    def action_delete_tag(self) -> None:
        sel = self._selected_tag()
        if sel is None:
            return
        from tagging.edits import RemoveTags

        self._apply(RemoveTags([sel[1]]), [self.current_key])

    def action_move_tag(self, delta: int) -> None:
        sel = self._selected_tag()
        if sel is None:
            return
        index, _ = sel
        tags = list(self.session.dataset.image(self.current_key).tags)
        target = index + delta
        if not 0 <= target < len(tags):
            return
        tags[index], tags[target] = tags[target], tags[index]
        from tagging.edits import SetTags

        self._apply(SetTags({self.current_key: tags}, label=f"move {tags[target]}"), [self.current_key])
        self.query_one("#ds-tags", OptionList).highlighted = target

    def action_add_tag(self) -> None:
        if self.current_key is None:
            return
        suggester = SuggestFromList(self.session.tag_vocabulary(), case_sensitive=False)
        self.app.push_screen(PromptScreen(f"Add a tag to {self.current_key}:", suggester=suggester), self._added)

    def _added(self, tag: str | None) -> None:
        if not tag:
            return
        from tagging.edits import AddTag

        try:
            op = AddTag(tag)
        except UserError as err:
            self.show_error(err)
            return
        self._apply(op, [self.current_key])

    def action_mark_wrong(self) -> None:
        sel = self._selected_tag()
        if sel is None:
            return
        try:
            self.session.mark_wrong(self.current_key, sel[1])
        except UserError as err:
            self.show_error(err)
            return
        self._redraw_current()
        self.notify(f"'{sel[1]}' marked wrong on {self.current_key} (removed; recorded for review)")

    def action_trash_image(self) -> None:
        key = self.current_key
        if key is None:
            return

        def answered(yes: bool | None) -> None:
            if not yes:
                return
            try:
                self.session.dataset.trash(key)
            except UserError as err:
                self.show_error(err)
                return
            self.notify(f"{key} moved to .kazari/trash (u undoes)")
            self.current_key = None
            self.refresh_view()
            self.update_status()

        self.app.push_screen(ConfirmScreen(f"Move {key} and its caption to the dataset trash?"), answered)

    def action_findings(self) -> None:
        if not self.findings:
            self.notify("No lint findings.")
            return
        self.app.push_screen(FindingsScreen(self.findings, self.session.workspace), self._jump)

    def _jump(self, finding: Any) -> None:
        if finding is None:
            return
        key = self._finding_key(finding)
        if key is None or key not in self.visible_keys:
            self.query_text = ""
            self.query_one("#ds-filter", Input).value = ""
            self.refresh_view()
        if key in self.visible_keys:
            # Show it now: the screen's resume redraw (after this dialog closes) keeps current_key.
            self.show_image(key)
            self.query_one("#ds-images", DataTable).move_cursor(row=self.visible_keys.index(key))
        else:
            self.notify(f"{finding.message}", timeout=8)

    def action_undo(self) -> None:
        self.do_undo()

    def action_redo(self) -> None:
        self.do_redo()

    def action_save(self) -> None:
        self.save_captions()


def _count_cell(n_tags: int, changed: bool, flagged: bool) -> str:
    """Tag count plus markers: ✎ unsaved edit, ! lint finding."""
    return f"{n_tags:>3} {'✎' if changed else ' '}{'!' if flagged else ' '}"
