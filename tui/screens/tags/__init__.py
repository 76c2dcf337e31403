"""The Tags screen and its widgets."""
