"""A footer that shows only the key hints that fit, most important first, and `?` for the rest.

Textual's footer scrolls sideways when its hints are wider than the terminal: at 80 columns the
last hints were cut mid-word and a letter of them showed past "^p palette". Here each screen's
BINDINGS order is its order of importance; hints are dropped from the end until the line fits,
and the help entry (every key, also the dropped ones) is always shown.
"""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.events import Resize
from textual.widgets import Footer
from textual.widgets._footer import FooterKey

HELP_ACTION = "help"
PALETTE_WIDTH = 13  # "▏^p palette" plus its padding, docked on the right
HELP_KEY_DISPLAY = "?"
HELP_DESCRIPTION = "all keys"


def hint_width(key_display: str, description: str) -> int:
    """Cells one compact hint takes: key, space, description, then its one-cell margin."""
    return len(key_display) + (1 + len(description) if description else 0) + 1


def fit_hints(hints: list[tuple[str, str]], width: int) -> int:
    """How many of ``hints`` (key display, description), taken in order, fit in ``width`` cells."""
    used = 0
    for count, (key, description) in enumerate(hints):
        used += hint_width(key, description)
        if used > width:
            return count
    return len(hints)


class FittedFooter(Footer):
    _fitted_width: int | None = None  # the width the hints were last fitted to

    def compose(self) -> ComposeResult:
        if not self._bindings_ready:
            return
        active = self.screen.active_bindings
        shown: dict[str, tuple[Binding, bool, str]] = {}
        help_binding = None
        for _node, binding, enabled, tooltip in active.values():
            if binding.action == HELP_ACTION:
                help_binding = binding
            elif binding.show and binding.action not in shown:
                shown[binding.action] = (binding, enabled, tooltip)
        items = list(shown.values())
        budget = self.app.size.width - hint_width(HELP_KEY_DISPLAY, HELP_DESCRIPTION)
        if self.show_command_palette and self.app.ENABLE_COMMAND_PALETTE:
            budget -= PALETTE_WIDTH
        displays = [(self.app.get_key_display(b), b.description) for b, _, _ in items]
        fitting = fit_hints(displays, budget)
        for (binding, enabled, tooltip), (display, _) in zip(items[:fitting], displays[:fitting], strict=True):
            yield FooterKey(binding.key, display, binding.description, binding.action,
                            disabled=not enabled, tooltip=tooltip).data_bind(compact=Footer.compact)
        if help_binding is not None:
            yield FooterKey("question_mark", HELP_KEY_DISPLAY, HELP_DESCRIPTION, HELP_ACTION,
                            tooltip="every key of this screen (also f1)").data_bind(compact=Footer.compact)
        if self.show_command_palette and self.app.ENABLE_COMMAND_PALETTE:
            palette = active.get(self.app.COMMAND_PALETTE_BINDING)
            if palette is not None:
                _node, binding, enabled, tooltip = palette
                yield FooterKey(binding.key, self.app.get_key_display(binding), binding.description,
                                binding.action, classes="-command-palette", disabled=not enabled,
                                tooltip=binding.tooltip or binding.description)

    def on_resize(self, event: Resize) -> None:
        # Which hints fit depends on the width: a wider terminal shows more of them.
        if self._bindings_ready and event.size.width != self._fitted_width:
            self._fitted_width = event.size.width
            self.call_after_refresh(self.recompose)
