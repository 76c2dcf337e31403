"""The Tagger screen and its widgets."""
