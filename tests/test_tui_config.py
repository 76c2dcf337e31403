"""Config screen: an invalid value shows a message inline, fixing it clears it, saving keeps comments."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tui.app import make_app
from tui.testing import make_workspace, screen_text


def test_invalid_value_message_fix_and_save_keeps_comments(tmp_path: Path) -> None:
    ws = make_workspace(tmp_path / "ws", images=4, tagger=False)
    config = ws / "kazari.toml"
    config.write_text("# my own note about this run\n" + config.read_text())
    app = make_app(ws, log_to_file=False, start_mode="config")

    async def main() -> None:
        async with app.run_test(size=(120, 40)) as pilot:
            await pilot.pause()
            await app.workers.wait_for_complete()
            await pilot.pause(0.5)
            await app.workers.wait_for_complete()
            await pilot.pause()
            screen = app.screen
            assert "steps: 4/epoch × 1 = 4" in screen_text(app)
            field = screen.query_one("#in-training-max_train_epochs")
            field.focus()
            await pilot.pause()
            await pilot.press("end", "backspace", *"abc")
            await pilot.pause()
            row = screen.query_one("#row-training-max_train_epochs")
            assert row.has_class("-invalid")
            assert "cannot read 'abc' as int" in screen_text(app)
            await pilot.press(*["backspace"] * 3, "3")
            await pilot.pause(0.6)
            await app.workers.wait_for_complete()
            await pilot.pause()
            assert not row.has_class("-invalid")
            assert "steps: 4/epoch × 3 = 12" in screen_text(app)
            await pilot.press("ctrl+t")  # raw TOML view shows the edit
            await pilot.pause()
            assert "max_train_epochs = 3" in screen.query_one("#cf-raw").text
            await pilot.press("ctrl+s")
            await pilot.pause()

    asyncio.run(main())
    text = config.read_text()
    assert "max_train_epochs = 3" in text
    assert text.startswith("# my own note about this run\n")
    assert "# Number of epochs." in text


def test_save_refuses_to_clobber_a_file_changed_on_disk(tmp_path: Path) -> None:
    ws = make_workspace(tmp_path / "ws", images=2, tagger=False)
    config = ws / "kazari.toml"
    app = make_app(ws, log_to_file=False, start_mode="config")

    async def main() -> None:
        async with app.run_test(size=(120, 40)) as pilot:
            await pilot.pause()
            screen = app.screen
            screen.query_one("#in-network-network_dim").focus()
            await pilot.press("end", "backspace", "8")
            await pilot.pause()
            config.write_text(config.read_text() + "\n# edited in vim meanwhile\n")
            await pilot.press("ctrl+s")
            await pilot.pause()
            assert "changed on disk" in screen_text(app)
            await pilot.press("n")
            await pilot.pause()

    asyncio.run(main())
    assert config.read_text().endswith("# edited in vim meanwhile\n")


def test_advanced_preset_and_reload_rebuild_the_form(tmp_path: Path) -> None:
    """Rebuilding the form (advanced fields, a preset, reload) once crashed on duplicate row ids."""
    from tui.widgets.dialogs import ConfirmScreen, PromptScreen

    ws = make_workspace(tmp_path / "ws", images=2, tagger=False)
    config = ws / "kazari.toml"
    on_disk = config.read_text()
    app = make_app(ws, log_to_file=False, start_mode="config")

    async def main() -> None:
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.pause()
            await app.workers.wait_for_complete()
            screen = app.screen
            basic = len(screen.query("FieldRow"))
            await pilot.press("ctrl+o")
            await pilot.pause()
            assert len(screen.query("FieldRow")) > basic
            await pilot.press("ctrl+o")
            await pilot.pause()
            assert len(screen.query("FieldRow")) == basic
            await pilot.press("ctrl+b")
            await pilot.pause()
            assert isinstance(app.screen, PromptScreen)
            await pilot.press("ctrl+u", *"anime-character", "enter")
            await pilot.pause()
            assert app.session.config.dirty
            assert "config unsaved" in screen_text(app)  # the mode bar says so on every screen
            await pilot.press("ctrl+r")  # reload drops the edits, so it asks first
            await pilot.pause()
            assert isinstance(app.screen, ConfirmScreen)
            await pilot.press("n")
            await pilot.pause()
            assert app.session.config.dirty
            await pilot.press("ctrl+r", "y")
            await pilot.pause()
            assert not app.session.config.dirty
            assert len(screen.query("FieldRow")) == basic
            assert "config unsaved" not in screen_text(app)

    asyncio.run(main())
    assert app.return_value is None
    assert config.read_text() == on_disk


def test_side_panel_shows_what_a_run_would_refuse_or_warn_about(tmp_path: Path) -> None:
    from tui.testing import wait_for_text

    ws = make_workspace(tmp_path / "ws", images=2, tagger=False)
    config = ws / "kazari.toml"
    text = config.read_text()
    import re

    config.write_text(re.sub(r"(?m)^network_alpha = .*$", "network_alpha = 999", text, count=1))
    app = make_app(ws, log_to_file=False, start_mode="config")

    async def main() -> None:
        async with app.run_test(size=(120, 40)) as pilot:
            panel = await wait_for_text(app, pilot, "warnings:")
            assert "network_alpha" in panel

    asyncio.run(main())
