"""Widgets shared by several screens (screen-specific widgets live next to their screen)."""
