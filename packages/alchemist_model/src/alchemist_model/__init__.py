"""alchemist_model: the Video Alchemist diffusion transformer, training and inference."""

__version__ = "0.1.0"
