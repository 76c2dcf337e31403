"""The Dataset screen and its widgets."""
