"""unmask: masked diffusion and autoregressive language models, side by side."""

__version__ = "0.1.0"
