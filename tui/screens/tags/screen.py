"""The Tags screen: the tag frequency table of the dataset (or one folder, or a query's images),
multi-select bulk edits, suggested character-feature tags with one-key pruning, trigger word,
repeats, and the undo history."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import DataTable, Input, OptionList, Static
from textual.widgets.option_list import Option

from tagging.errors import UserError
from tui.screens.base import KazariScreen
from tui.widgets.dialogs import ConfirmScreen, PromptScreen
from tui.widgets.tables import reset_columns


class TagsScreen(KazariScreen):
    MODE = "tags"
    DEFAULT_CSS = """
    TagsScreen #tg-left { width: 1fr; }
    TagsScreen #tg-right { width: 34; }
    TagsScreen #tg-search, TagsScreen #tg-where { height: 1; border: none; padding: 0 1; }
    TagsScreen #tg-scope, TagsScreen #tg-info { height: auto; padding: 0 1; }
    TagsScreen #tg-history { height: 1fr; border: none; }
    """
    BINDINGS = [
        Binding("slash", "focus_search", "Search", id="tg-search"),
        Binding("space", "toggle_select", "Select", id="tg-select"),
        Binding("d", "remove", "Remove", id="tg-remove"),
        Binding("P", "prune", "Prune ★", id="tg-prune"),
        Binding("t", "trigger", "Trigger", id="tg-trigger"),
        Binding("s", "save", "Save", id="tg-save"),
        Binding("u", "undo", "Undo", id="tg-undo"),
        Binding("r", "redo", "Redo", id="tg-redo"),
        Binding("e", "replace", "Replace", id="tg-replace"),
        Binding("m", "move_end", "To end", id="tg-move-end"),
        Binding("R", "repeats", "Repeats", id="tg-repeats"),
        Binding("o", "cycle_scope", "Scope", id="tg-scope"),
        Binding("i", "focus_where", "Images query", id="tg-where"),
        Binding("c", "clear_selection", "Clear sel", id="tg-clear"),
        Binding("f", "toggle_feature", "Feature ±", id="tg-feature"),
        Binding("n", "toggle_never", "Never-add ±", id="tg-never"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.selected: set[str] = set()
        self.scope: str | None = None  # None = whole dataset, else a folder name
        self.search = ""
        self.where = ""
        self.rows: list[str] = []
        self.suggested: dict[str, list[str]] = {}  # feature tag -> folders it is suggested for
        self._counted: tuple[list[tuple[str, int]], dict[str, list[str]]] = ([], {})
        self._counted_state: tuple | None = None
        self._scope_counts = (0, 0)

    def compose_body(self) -> ComposeResult:
        with Horizontal():
            with Vertical(id="tg-left"):
                yield Input(placeholder="/ search tags", id="tg-search", compact=True)
                yield Input(placeholder="i images: 1girl AND NOT solo", id="tg-where", compact=True)
                yield Static("", id="tg-scope")
                yield DataTable(id="tg-table", cursor_type="row")
            with Vertical(id="tg-right"):
                yield Static("", id="tg-info")
                yield Static("history (u undo · r redo)", classes="pane-title")
                yield OptionList(id="tg-history")

    def on_mount(self) -> None:
        self.query_one("#tg-table", DataTable).focus()  # columns are set with the rows (refresh_view)

    # -- data --------------------------------------------------------------------------------------
    def target_keys(self) -> list[str] | None:
        """Images the bulk edits apply to: the scope folder and the images query (None = all)."""
        ds = self.session.dataset
        images = ds.images if self.scope is None else ds.folder(self.scope).images
        predicate = None
        if self.where.strip():
            from tagging.query import compile_query

            predicate = compile_query(self.where)
        if self.scope is None and predicate is None:
            return None
        return [img.key for img in images if predicate is None or predicate(img.tags)]

    def refresh_view(self) -> None:
        ds = self.session.dataset
        scope_line = self.query_one("#tg-scope", Static)
        if ds is None:
            scope_line.update(self.session.dataset_error or "no dataset loaded (open the Dataset screen: 1)")
            return
        if not self.query_one("#tg-table", DataTable).size.width:
            self.call_after_refresh(self.refresh_view)  # see DatasetScreen.refresh_view
            return
        try:
            keys = self.target_keys()
        except UserError as err:
            self.show_error(err)
            self.where = ""
            keys = self.target_keys()
        images = ds.images if keys is None else [ds.image(k) for k in keys]
        # Counting is O(images): cache it per scope/query/edit so typing a search stays instant.
        history = ds.history
        state = (self.scope, self.where, len(history), len(ds.redo_stack), history[-1].id if history else 0)
        if state != self._counted_state:
            self._counted = self.session.tag_counts(images), self.session.feature_suggestions(self.scope)
            self._counted_state = state
        freq, self.suggested = self._counted
        table = self.query_one("#tg-table", DataTable)
        cursor = table.cursor_row
        needle = self.search.strip().lower()
        self.rows = [t for t, _ in freq if not needle or needle in t.lower()]
        total = max(1, len(images))
        counts = dict(freq)
        reset_columns(table, [
            ("", "sel", 1),
            ("tag", "tag", max((len(t) for t in self.rows), default=3)),
            ("count", "count", max((len(str(counts[t])) for t in self.rows), default=1)),
            ("%", "pct", 3),
            ("", "why", len("★ feature") if self.suggested else 0),
        ])
        for tag in self.rows:
            star = Text("★ feature", style="bold yellow") if tag in self.suggested else Text("")
            name = Text(tag, style="bold yellow") if tag in self.suggested else Text(tag)
            table.add_row(
                "●" if tag in self.selected else "",
                name,
                str(counts[tag]),
                f"{100 * counts[tag] / total:.0f}",
                star,
            )
        if self.rows:
            table.move_cursor(row=min(cursor, len(self.rows) - 1))
        self._scope_counts = (len(images), len(freq))
        self._draw_scope()
        self._draw_info()
        self._draw_history()

    def _draw_scope(self) -> None:
        n_images, n_tags = self._scope_counts
        scope = "all folders" if self.scope is None else f"folder {self.scope}"
        where = f" · images matching {self.where!r}" if self.where.strip() else ""
        self.query_one("#tg-scope", Static).update(
            f"{scope}{where}: {n_images} images, {n_tags} tags · {len(self.selected)} selected · "
            f"★ {len(self.suggested)} suggested (P prunes)"
        )

    def _draw_info(self) -> None:
        ds = self.session.dataset
        # Text, not markup: a folder named like "10_[name]" must not be read as a style tag.
        info = Text()
        for folder in ds.folders:
            trig = folder.trigger or "—"
            info.append(f"{folder.name}: ×{folder.repeats}, trigger {trig}, {len(folder.images)} img\n")
        dirty = len(ds.dirty_keys)
        info.append(f"● {dirty} unsaved" if dirty else "all saved", style="bold")
        info.append("\ncharacter profile (tagger keeps these out):\n", style="bold")
        try:
            profile = self._profile()
        except UserError as err:
            info.append(str(err), style="red")
        else:
            info.append(f" trigger {profile.trigger or '—'} (t)\n")
            info.append(f" features: {', '.join(profile.features) or '—'} (f)\n")
            info.append(f" never add: {', '.join(profile.never_add) or '—'} (n)")
        self.query_one("#tg-info", Static).update(info)

    def _profile(self) -> Any:
        from tagging.character import load_character

        return load_character(self.session.require_dataset().root)

    def _edit_profile(self, change: Any) -> None:
        """Load, change (``change(profile) -> message``), save the profile; errors shown."""
        from tagging.character import save_character

        try:
            profile = self._profile()
            message = change(profile)
            save_character(self.session.require_dataset().root, profile)
        except UserError as err:
            self.show_error(err)
            return
        if message:
            self.notify(message)
        self._draw_info()

    def _draw_history(self) -> None:
        ds = self.session.dataset
        hist = self.query_one("#tg-history", OptionList)
        hist.clear_options()
        redo = list(reversed(ds.redo_stack))
        undo = list(reversed(ds.history))
        options = [Option(Text(f"↷ {c.label}", style="dim")) for c in reversed(redo)]
        options += [Option(f"{'▶' if i == 0 else ' '} {c.label} ({len(c)})") for i, c in enumerate(undo)]
        hist.add_options(options or [Option(Text("no edits yet", style="dim"))])

    # -- selection helpers ----------------------------------------------------------------------------
    def current_tag(self) -> str | None:
        table = self.query_one("#tg-table", DataTable)
        if not self.rows or table.cursor_row >= len(self.rows):
            return None
        return self.rows[table.cursor_row]

    def chosen_tags(self) -> list[str]:
        """The multi-selection, or the tag under the cursor when nothing is selected."""
        if self.selected:
            return sorted(self.selected)
        tag = self.current_tag()
        return [tag] if tag else []

    # -- events ------------------------------------------------------------------------------------
    @on(Input.Submitted, "#tg-search")
    def _search(self, event: Input.Submitted) -> None:
        self.search = event.value
        self.refresh_view()
        self.query_one("#tg-table", DataTable).focus()

    @on(Input.Changed, "#tg-search")
    def _search_live(self, event: Input.Changed) -> None:
        self.search = event.value
        self.refresh_view()

    @on(Input.Submitted, "#tg-where")
    def _where(self, event: Input.Submitted) -> None:
        self.where = event.value
        self.refresh_view()
        self.query_one("#tg-table", DataTable).focus()

    # -- actions -----------------------------------------------------------------------------------
    def action_focus_search(self) -> None:
        self.query_one("#tg-search", Input).focus()

    def action_focus_where(self) -> None:
        self.query_one("#tg-where", Input).focus()

    def action_toggle_select(self) -> None:
        tag = self.current_tag()
        if tag is None:
            return
        self.selected ^= {tag}
        table = self.query_one("#tg-table", DataTable)
        table.update_cell_at((table.cursor_row, 0), "●" if tag in self.selected else "")
        table.move_cursor(row=min(table.cursor_row + 1, len(self.rows) - 1))
        self._draw_scope()  # the "N selected" count

    def action_clear_selection(self) -> None:
        self.selected.clear()
        self.refresh_view()

    def _apply(self, op: Any, keys: list[str] | None) -> None:
        try:
            change = self.session.require_dataset().apply(op, keys=keys)
        except UserError as err:
            self.show_error(err)
            return
        self.notify(f"{change.label}: {len(change)} image(s) changed")
        self.selected.clear()
        self.refresh_view()
        self.update_status()

    def action_remove(self) -> None:
        from tagging.edits import RemoveTags

        tags = self.chosen_tags()
        if tags and self.session.dataset is not None:
            self._apply(RemoveTags(tags), self.target_keys())

    def action_move_end(self) -> None:
        from tagging.edits import MoveToEnd

        tags = self.chosen_tags()
        if tags and self.session.dataset is not None:
            self._apply(MoveToEnd(tags), self.target_keys())

    def action_replace(self) -> None:
        tags = self.chosen_tags()
        if len(tags) != 1:
            self.notify("Replace works on one tag: put the cursor on it (clear the selection with c).")
            return
        old = tags[0]

        def answered(new: str | None) -> None:
            if not new:
                return
            from tagging.edits import ReplaceTag

            try:
                op = ReplaceTag(old, new)
            except UserError as err:
                self.show_error(err)
                return
            self._apply(op, self.target_keys())

        self.app.push_screen(PromptScreen(f"Replace '{old}' with:", old), answered)

    def action_prune(self) -> None:
        if not self.suggested:
            self.notify("No suggested feature tags.")
            return
        tags = sorted(self.suggested)

        def answered(yes: bool | None) -> None:
            if yes:
                self._prune()

        self.app.push_screen(
            ConfirmScreen(
                f"Prune {len(tags)} suggested feature tag(s) so the trigger word learns them?\n"
                + ", ".join(tags)
            ),
            answered,
        )

    def _prune(self) -> None:
        """Remove each folder's suggested features from that folder's images (one undo step each)."""
        from tagging.edits import RemoveTags

        ds = self.session.require_dataset()
        targets = self.target_keys()
        allowed = None if targets is None else set(targets)
        by_folder: dict[str, list[str]] = {}
        for tag, folders in self.suggested.items():
            for name in folders:
                by_folder.setdefault(name, []).append(tag)
        changed = 0
        pruned: list[str] = []
        for name, tags in sorted(by_folder.items()):
            keys = [img.key for img in ds.folder(name).images if allowed is None or img.key in allowed]
            try:
                changed += len(ds.apply(RemoveTags(sorted(tags)), keys=keys))
            except UserError as err:
                self.show_error(err)
                break
            pruned.extend(sorted(tags))
        # Pruned features are the character's fixed features: the tagger must not write them back.
        def record(profile: Any) -> None:
            profile.add_features(pruned)

        self._edit_profile(record)
        self.notify(f"pruned suggested features: {changed} image(s) changed (u undoes); recorded in the "
                    "character profile so the tagger keeps them out (f on a tag forgets one)")
        self.selected.clear()
        self.refresh_view()
        self.update_status()

    def action_trigger(self) -> None:
        ds = self.session.dataset
        if ds is None:
            return
        default = next((f.trigger for f in ds.folders if f.trigger), "")

        def answered(word: str | None) -> None:
            if not word:
                return
            from tagging.edits import SetTrigger

            try:
                op = SetTrigger(word)
            except UserError as err:
                self.show_error(err)
                return
            self._apply(op, self.target_keys())

            def set_trigger(profile: Any) -> None:
                profile.trigger = word.strip()

            self._edit_profile(set_trigger)  # the tagger then keeps it first

        try:
            default = self._profile().trigger or default
        except UserError:
            pass
        self.app.push_screen(PromptScreen("Trigger word (put first in every caption):", default), answered)

    def action_repeats(self) -> None:
        ds = self.session.dataset
        if ds is None or not ds.folders:
            return
        folder = ds.folder(self.scope) if self.scope else ds.folders[0]

        def answered(value: str | None) -> None:
            if not value:
                return
            try:
                n = int(value)
                ds.set_repeats(folder.name, n)
            except ValueError:
                self.show_error(UserError(f"Repeats must be a whole number ≥ 1, not {value!r}."))
                return
            except UserError as err:
                self.show_error(err)
                return
            if self.scope is not None:
                self.scope = next((f.name for f in ds.folders if f.path == folder.path), None)
            self.notify(f"repeats of {folder.trigger or folder.name} set to {n}")
            self.refresh_view()
            self.update_status()

        self.app.push_screen(PromptScreen(f"Repeats for folder {folder.name}:", str(folder.repeats)), answered)

    def action_toggle_feature(self) -> None:
        """Record (or forget) the chosen tags as fixed features of the character."""
        tags = self.chosen_tags()
        if not tags or self.session.dataset is None:
            return

        def toggle(profile: Any) -> str:
            gone = profile.remove_features(tags)
            new = profile.add_features([t for t in tags if t not in gone])
            return "; ".join(part for part in (
                f"features recorded: {', '.join(new)} (prune them with d)" if new else "",
                f"no longer features: {', '.join(gone)}" if gone else "") if part)

        self._edit_profile(toggle)

    def action_toggle_never(self) -> None:
        """Put (or take) the chosen tags on the never-add list the tagger honours."""
        tags = self.chosen_tags()
        if not tags or self.session.dataset is None:
            return

        def toggle(profile: Any) -> str:
            gone = profile.remove_never(tags)
            new = profile.add_never([t for t in tags if t not in gone])
            return "; ".join(part for part in (
                f"never add: {', '.join(new)}" if new else "",
                f"may be added again: {', '.join(gone)}" if gone else "") if part)

        self._edit_profile(toggle)

    def action_cycle_scope(self) -> None:
        ds = self.session.dataset
        if ds is None:
            return
        names = [None, *(f.name for f in ds.folders)]
        self.scope = names[(names.index(self.scope) + 1) % len(names)] if self.scope in names else None
        self.refresh_view()

    def action_undo(self) -> None:
        self.do_undo()

    def action_redo(self) -> None:
        self.do_redo()

    def action_save(self) -> None:
        self.save_captions()
