"""The Config screen and its widgets."""
