"""Checkpoint files of a training RUN: the layout, atomic saves, the RNG states, and loading weights back.

``RUN/checkpoints/step-XXXXXXXX/{transformer/, transformer_ema/, state.pt}`` plus ``checkpoints/latest`` (the name
of the newest). A checkpoint is written under a temporary name and renamed, then ``latest`` is replaced, so a
kill never leaves a half checkpoint behind the pointer. Inference needs only ``resolve_transformer_dir``, so it
lives here rather than in the training loop.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from alchemist_model.transformer_alchemist import AlchemistTransformer3DModel

CHECKPOINTS = "checkpoints"


def rng_state(generator: torch.Generator) -> dict[str, Any]:
    return {
        "generator": generator.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        "numpy": np.random.get_state(),
        "python": random.getstate(),
    }


def restore_rng(state: dict[str, Any], generator: torch.Generator) -> None:
    generator.set_state(state["generator"])
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])


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
    for name in ("transformer_ema", "transformer") if prefer_ema else ("transformer",):
        if (checkpoint / name / "config.json").exists():
            return checkpoint / name
    raise ValueError(f"{str(path)!r} holds no trained transformer (no checkpoints/latest, no config.json)")


def checkpoint_step(folder: Path) -> int:
    """The training step a checkpoint folder holds, from its name (``step-XXXXXXXX``, see :func:`save_checkpoint`):
    no need to load its ``state.pt``, which holds the whole optimizer state."""
    return int(Path(folder).name.removeprefix("step-"))


def save_checkpoint(
    run_dir: Path,
    model_state: dict[str, torch.Tensor],
    model: AlchemistTransformer3DModel,
    state: dict[str, Any],
    ema: dict[str, torch.Tensor] | None,
) -> Path:
    name = f"step-{state['step']:08d}"
    folder = run_dir / CHECKPOINTS / name
    tmp = run_dir / CHECKPOINTS / f".{name}.tmp"
    if tmp.exists():
        import shutil

        shutil.rmtree(tmp)
    model.save_pretrained(tmp / "transformer", state_dict=model_state, safe_serialization=True)
    if ema is not None:
        model.save_pretrained(tmp / "transformer_ema", state_dict=ema, safe_serialization=True)
    torch.save(state, tmp / "state.pt")
    if folder.exists():
        import shutil

        shutil.rmtree(folder)
    tmp.rename(folder)
    pointer = run_dir / CHECKPOINTS / "latest"
    pointer.with_suffix(".tmp").write_text(name + "\n")
    pointer.with_suffix(".tmp").replace(pointer)
    return folder


def load_model_weights(model: AlchemistTransformer3DModel, folder: Path) -> None:
    from safetensors.torch import load_file

    model.load_state_dict(load_file(folder / "diffusion_pytorch_model.safetensors"))


def load_backbone(model: AlchemistTransformer3DModel, source: str) -> list[str]:
    """Stage II from a stage-I run: load what matches; the personalization branch stays freshly initialised."""
    from safetensors.torch import load_file

    weights = load_file(resolve_transformer_dir(source, prefer_ema=False) / "diffusion_pytorch_model.safetensors")
    missing, unexpected = model.load_state_dict(weights, strict=False)
    if unexpected:
        raise ValueError(f"init_from {source!r}: unexpected weights {unexpected[:5]} (a different architecture?)")
    return missing
