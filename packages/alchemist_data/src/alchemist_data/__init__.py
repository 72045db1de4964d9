"""alchemist_data: the Video Alchemist curation pipeline (entity words, grounding, segmentation, references)."""

__version__ = "0.1.0"
