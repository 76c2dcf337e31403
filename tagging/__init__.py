"""kazari tagging package."""
