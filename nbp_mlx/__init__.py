"""nbp-mlx: turn short Chinese descriptions into professional Nano Banana Pro image prompts, locally."""

__version__ = "0.1.0"
