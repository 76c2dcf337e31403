"""DataTable helpers shared by the screens."""

from __future__ import annotations

from textual.widgets import DataTable


def reset_columns(table: DataTable, columns: list[tuple[str, str, int]]) -> None:
    """Clear ``table`` and give it ``(label, key, content width)`` columns with fixed widths.

    Auto-sized columns were sometimes drawn at their header's width after a clear + refill (tags cut
    to "1gi", depending on timing), so every table sizes its columns from the rows it is about to add.
    """
    table.clear(columns=True)
    for label, key, width in columns:
        table.add_column(label, key=key, width=max(width, len(label)))
