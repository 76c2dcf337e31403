"""One row of the config form: key, value field, inline validation message."""

from __future__ import annotations

from typing import Any

from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import Input, Label, Static

PROMPT_SEPARATOR = " || "  # a one-line field cannot hold newlines; prompt lines are joined with this


def value_text(spec: Any, value: Any) -> str:
    """The text a form field shows for a typed config value."""
    if value is None:
        return ""
    if spec.kind == "bool":
        return "true" if value else "false"
    if spec.kind == "prompts":
        return value if isinstance(value, str) else PROMPT_SEPARATOR.join(value)
    if spec.kind == "table":
        import tomlkit

        table = tomlkit.inline_table()
        table.update(value or {})
        return table.as_string()
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def field_text_for_document(spec: Any, text: str) -> str:
    """Undo the one-line encoding of multi-line values before handing them to the document."""
    if spec.kind == "prompts":
        return "\n".join(part.strip() for part in text.split("||"))
    return text


class FieldRow(Vertical):
    DEFAULT_CSS = """
    FieldRow { height: auto; }
    FieldRow > Horizontal { height: 1; }
    FieldRow Label { width: 28; padding-right: 1; color: $text-muted; text-wrap: nowrap; text-overflow: ellipsis; }
    FieldRow Input { width: 1fr; height: 1; border: none; }
    FieldRow .field-error { color: $error; height: auto; padding-left: 28; display: none; }
    FieldRow.-invalid .field-error { display: block; }
    FieldRow.-invalid Label { color: $error; text-style: bold; }
    """

    def __init__(self, spec: Any, text: str) -> None:
        super().__init__(id="row-" + spec.key.replace(".", "-"))
        self.spec = spec
        self.text = text

    def compose(self) -> ComposeResult:
        with Horizontal():
            yield Label(self.spec.name, markup=False)
            yield Input(self.text, id="in-" + self.spec.key.replace(".", "-"), compact=True,
                        placeholder="(default)" if self.spec.optional else "")
        yield Static("", classes="field-error")

    @property
    def input(self) -> Input:
        return self.query_one(Input)

    def set_error(self, message: str | None) -> None:
        self.set_class(bool(message), "-invalid")
        self.query_one(".field-error", Static).update(message or "")
