"""Where a training run keeps its checkpoints, shared by training (save, resume) and inference (load).

A run folder holds ``checkpoints/step-XXXXXXXX/{transformer,transformer_ema,state.pt}`` and a ``checkpoints/latest``
pointer written last, so a reader never follows it to a half-written checkpoint.
"""

from __future__ import annotations

from pathlib import Path

CHECKPOINTS = "checkpoints"


def latest_checkpoint(run_dir: Path) -> Path | None:
    pointer = Path(run_dir) / CHECKPOINTS / "latest"
    if not pointer.exists():
        return None
    return Path(run_dir) / CHECKPOINTS / pointer.read_text().strip()


def resolve_transformer_dir(path: str | Path, prefer_ema: bool = True) -> Path:
    """A RUN folder, a checkpoint folder or a transformer folder -> the transformer folder to load."""
    path = Path(path)
    if (path / "config.json").exists() and (path / "diffusion_pytorch_model.safetensors").exists():
        return path
    checkpoint = latest_checkpoint(path) or path
    for name in (("transformer_ema", "transformer") if prefer_ema else ("transformer",)):
        if (checkpoint / name / "config.json").exists():
            return checkpoint / name
    raise ValueError(f"{str(path)!r} holds no trained transformer (no checkpoints/latest, no config.json)")
