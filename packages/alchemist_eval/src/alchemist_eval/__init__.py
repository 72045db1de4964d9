"""alchemist_eval: the MSRVTT-Personalization benchmark (Text-S, Vid-S, Subj-S, Face-S, Dync-D)."""

__version__ = "0.1.0"
