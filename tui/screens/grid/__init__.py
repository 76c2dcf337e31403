"""The Grid screen and its widgets."""
