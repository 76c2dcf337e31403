"""kazari tui package."""
