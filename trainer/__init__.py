"""kazari trainer package."""
