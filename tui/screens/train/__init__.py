"""The Train screen and its widgets."""
