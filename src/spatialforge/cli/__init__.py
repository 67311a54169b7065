"""Command-line interface (the composition root)."""
