"""The Config screen: a form over the TOML config (fields grouped by section, descriptions, inline
validation as you type), presets, the derived step count and time estimate always visible, a raw
TOML view, and saving that keeps the file's comments (``ConfigDocument``)."""

from __future__ import annotations

from typing import Any

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import Input, Static, TextArea

from tagging.errors import ConflictError, UserError
from tui.screens.base import KazariScreen
from tui.screens.config.form import FieldRow, field_text_for_document, value_text
from tui.widgets.dialogs import ConfirmScreen, PromptScreen


class ConfigScreen(KazariScreen):
    MODE = "config"
    MAIN = "#cf-form"
    AUTO_FOCUS = "#cf-form"
    DEFAULT_CSS = """
    ConfigScreen #cf-form { width: 1fr; }
    ConfigScreen #cf-side { width: 36; padding: 0 1; border-left: solid $panel; }
    ConfigScreen .section { text-style: bold; background: $boost; margin-top: 1; }
    ConfigScreen #cf-help { height: auto; max-height: 5; padding: 0 1; background: $panel; }
    ConfigScreen #cf-raw { display: none; }
    ConfigScreen.-raw #cf-raw { display: block; }
    ConfigScreen.-raw #cf-form { display: none; }
    ConfigScreen #cf-derived { height: 1fr; }
    """
    BINDINGS = [
        Binding("ctrl+s", "save", "Save", id="cf-save"),
        Binding("ctrl+t", "toggle_raw", "TOML", id="cf-raw"),
        Binding("ctrl+b", "preset", "Preset", id="cf-preset"),
        Binding("ctrl+o", "toggle_advanced", "Advanced", id="cf-advanced"),
        Binding("ctrl+r", "reload", "Reload", id="cf-reload"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.show_advanced = False
        self.invalid: dict[str, str] = {}
        self._derive_timer: Any = None

    @property
    def doc(self) -> Any:
        return self.session.config_document()

    def compose_body(self) -> ComposeResult:
        with Horizontal():
            with Vertical():
                yield VerticalScroll(id="cf-form")
                yield TextArea("", id="cf-raw", read_only=True, language=None)
                yield Static("", id="cf-help")
            with Vertical(id="cf-side"):
                yield Static("", id="cf-file")
                yield Static("", id="cf-derived")

    async def on_mount(self) -> None:
        try:
            self.doc  # noqa: B018 - load (or create in memory) now so errors show at once
        except UserError as err:
            self.query_one("#cf-file", Static).update(str(err))
            return
        await self.build_form()
        self.schedule_derive()

    # -- form --------------------------------------------------------------------------------------
    async def build_form(self) -> None:
        from trainer.config import field_specs

        form = self.query_one("#cf-form", VerticalScroll)
        # Rows have fixed ids: the old ones must be gone before the new ones mount.
        await form.remove_children()
        widgets = []
        section = None
        for spec in field_specs():
            if spec.advanced and not self.show_advanced and not self.doc.has(spec.key):
                continue
            if spec.section != section:
                section = spec.section
                widgets.append(Static(f"[{section}]", classes="section", markup=False))
            widgets.append(FieldRow(spec, value_text(spec, self.doc.get(spec.key))))
        await form.mount_all(widgets)
        self._draw_file()

    def refresh_view(self) -> None:
        self._draw_file()

    def _draw_file(self) -> None:
        doc = self.session.config
        if doc is None:
            return
        ws = self.session.workspace
        state = "● unsaved" if doc.dirty else "saved"
        bad = f" · {len(self.invalid)} invalid field(s)" if self.invalid else ""
        from rich.text import Text

        # Text, not markup: a path may contain "[".
        self.query_one("#cf-file", Static).update(Text.assemble((ws.display(doc.path), "bold"), f" {state}{bad}"))

    @on(Input.Changed)
    def _field_changed(self, event: Input.Changed) -> None:
        row = next((a for a in event.input.ancestors if isinstance(a, FieldRow)), None)
        if row is None:
            return
        key = row.spec.key
        text = field_text_for_document(row.spec, event.value)
        if text == value_text(row.spec, self.doc.get(key)) and key not in self.invalid:
            return
        try:
            if text.strip() == "" and row.spec.optional:
                self.doc.unset(key)
            else:
                self.doc.set_text(key, text)
        except UserError as err:
            self.invalid[key] = str(err)
            row.set_error(_short(err))
        else:
            self.invalid.pop(key, None)
            row.set_error(None)
            self.schedule_derive()
        self._draw_file()
        self.update_status()

    def on_descendant_focus(self, event: Any) -> None:
        row = next((a for a in event.widget.ancestors_with_self if isinstance(a, FieldRow)), None)
        if row is None:
            return
        spec = row.spec
        extra = []
        if spec.choices:
            extra.append("choices: " + ", ".join(str(c) for c in spec.choices))
        if spec.sd_scripts:
            extra.append(f"sd-scripts: {spec.sd_scripts}")
        default = value_text(spec, spec.default) or "unset"
        if spec.unit:
            extra.append(f"unit: {spec.unit}")
        extra.append(f"default: {default}")
        from rich.text import Text

        text = Text(spec.key, style="bold")
        text.append(f" — {spec.description}\n" + " · ".join(extra))
        self.query_one("#cf-help", Static).update(text)

    # -- derived figures -----------------------------------------------------------------------------
    def schedule_derive(self) -> None:
        # Debounced: typing fast must not start a dataset scan per key press.
        if self._derive_timer is not None:
            self._derive_timer.stop()
        self._derive_timer = self.set_timer(0.3, self._derive)

    def _derive(self) -> None:
        session = self.session
        doc = self.doc

        def work() -> list[str]:
            return session.derived_lines(doc)

        self.run_job(work, self._derived, group="config-derive", description="derived figures")

    def _derived(self, lines: list[str]) -> None:
        self.query_one("#cf-derived", Static).update("\n".join(lines))

    # -- actions -----------------------------------------------------------------------------------
    def action_save(self) -> None:
        if self.invalid:
            keys = ", ".join(sorted(self.invalid))
            self.notify(f"Not saved field(s) still invalid: {keys}. The file gets their last valid values.",
                        severity="warning")
        try:
            wrote = self.doc.save()
        except ConflictError as err:

            def answered(yes: bool | None) -> None:
                if yes:
                    self.doc.save(force=True)
                    self.notify(f"saved {self.doc.path.name} (overwrote the change on disk)")
                    self._draw_file()
                    self.update_status()

            self.app.push_screen(ConfirmScreen(f"{err}\n\nOverwrite it with this form?"), answered)
            return
        except UserError as err:
            self.show_error(err)
            return
        self.notify(f"saved {self.doc.path.name}" if wrote else "nothing to save")
        self._draw_file()
        self.update_status()

    def action_toggle_raw(self) -> None:
        raw = self.query_one("#cf-raw", TextArea)
        raw.load_text(self.doc.text)
        self.toggle_class("-raw")
        (raw if self.has_class("-raw") else self.query_one("#cf-form")).focus()

    async def action_toggle_advanced(self) -> None:
        self.show_advanced = not self.show_advanced
        await self.build_form()

    async def action_reload(self) -> None:
        if self.doc.dirty:

            async def answered(yes: bool | None) -> None:
                if yes:
                    await self._reload()

            self.app.push_screen(
                ConfirmScreen(f"Reload {self.doc.path.name} from disk and drop the unsaved edits of this form?"),
                answered,
            )
            return
        await self._reload()

    async def _reload(self) -> None:
        try:
            self.doc.reload()
        except UserError as err:
            self.show_error(err)
            return
        self.invalid.clear()
        await self.build_form()
        self.schedule_derive()
        self.update_status()

    def action_preset(self) -> None:
        from trainer.config import PRESETS

        async def answered(name: str | None) -> None:
            if not name:
                return
            try:
                changed = self.session.apply_preset(name)
            except UserError as err:
                self.show_error(err)
                return
            self.notify(f"preset {name}: {changed} value(s) changed (paths and prompts kept)")
            self.invalid.clear()
            await self.build_form()
            self.schedule_derive()
            self.update_status()

        self.app.push_screen(PromptScreen(f"Preset ({', '.join(PRESETS)}):", PRESETS[0]), answered)


def _short(err: UserError) -> str:
    issues = getattr(err, "issues", None)
    if issues:
        first = issues[0]
        return f"{first.message}" + (f" — {first.fix}" if getattr(first, "fix", "") else "")
    return str(err)
