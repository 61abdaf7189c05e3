"""The Textual terminal app of nbp-mlx."""
