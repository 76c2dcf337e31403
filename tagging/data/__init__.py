"""Data tables shipped with kazari (feature rules)."""
