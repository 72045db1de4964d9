"""Released checkpoint files: read them, and load their state dicts so that every tensor lands or the load fails.

The paper's models come as files in their publishers' layouts (GroundingDINO ``{'model': {'module.' + key}}``, SAM
and ArcFace plain state dicts, princeton RAFT's ``nn.DataParallel`` names, ...). A loader that accepts any layout
with ``strict=False`` runs random weights without a word when a file has another layout, so every loader here goes
through :func:`load_exact`: nothing missing, nothing unexpected except the known harmless extras, every shape
equal; otherwise a :class:`~alchemist_data.models.base.ModelLoadError` that names the file, says which layout was
expected and lists the first keys that do not fit.
"""

from __future__ import annotations

import importlib.util
import os
import pickletools
import zipfile
from collections.abc import Iterable, Mapping
from typing import Any

from alchemist_data.models.base import ModelLoadError

_SHOW = 5  # keys listed per kind of mismatch: enough to recognise a layout, short enough to read


def read_checkpoint(path: str | os.PathLike, what: str, weights_only: bool = True) -> Any:
    """``torch.load`` of ``path`` on the CPU, or a ModelLoadError naming ``what`` and the file.

    ``weights_only=False`` is only for formats that pickle whole modules (the original YOLOv9 ``.pt``), where the
    file is as trusted as code.
    """
    import torch

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{what} checkpoint not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=weights_only)
    except Exception as exc:  # torch raises RuntimeError / UnpicklingError / EOFError / ... for a foreign file
        raise ModelLoadError(
            f"{what} checkpoint {path} is not a readable PyTorch file: {type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}"
        ) from exc


def unwrap_state_dict(ckpt: Any, keys: Iterable[str] = ("model", "state_dict")) -> Any:
    """The state dict inside a training checkpoint (the first of ``keys`` present), else ``ckpt`` itself."""
    if isinstance(ckpt, Mapping):
        for key in keys:
            if isinstance(ckpt.get(key), Mapping):
                return ckpt[key]
    return ckpt


def strip_prefix(state: Mapping[str, Any], prefix: str = "module.") -> dict[str, Any]:
    """Keys without a leading ``prefix`` (``nn.DataParallel`` / DDP add ``module.``)."""
    return {k.removeprefix(prefix): v for k, v in state.items()}


def load_exact(
    model: Any,
    state: Any,
    source: str | os.PathLike,
    what: str,
    layout: str,
    harmless_unexpected: Iterable[str] = (),
) -> None:
    """Load ``state`` into ``model`` only if it fits exactly; else a ModelLoadError naming ``source``.

    Fits: every key of ``model.state_dict()`` present with the same shape, and no other key except those in
    ``harmless_unexpected`` (extras a released file is known to carry). ``layout`` describes the expected file
    layout for the message.
    """
    if not isinstance(state, Mapping) or not all(isinstance(k, str) for k in state):
        raise ModelLoadError(
            f"{what} checkpoint {os.fspath(source)} holds a {type(state).__name__}, not a state "
            f"dict; expected {layout}"
        )
    own = model.state_dict()
    harmless = set(harmless_unexpected)
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own and k not in harmless]
    mismatched = [
        f"{k} {tuple(state[k].shape)} (model {tuple(own[k].shape)})"
        for k in own
        if k in state and hasattr(state[k], "shape") and tuple(state[k].shape) != tuple(own[k].shape)
    ]
    if missing or unexpected or mismatched:
        problems = []
        if missing:
            problems.append(
                f"{len(missing)} of the model's {len(own)} tensors are missing (first: {', '.join(missing[:_SHOW])})"
            )
        if unexpected:
            problems.append(f"{len(unexpected)} keys are not the model's (first: {', '.join(unexpected[:_SHOW])})")
        if mismatched:
            problems.append(f"{len(mismatched)} shapes differ (first: {', '.join(mismatched[:_SHOW])})")
        raise ModelLoadError(
            f"{what} checkpoint {os.fspath(source)} does not have the expected layout "
            f"({layout}): {'; '.join(problems)}"
        )
    model.load_state_dict({k: v for k, v in state.items() if k in own}, strict=True)


def pickle_globals(path: str | os.PathLike) -> set[str]:
    """Modules whose globals a ``torch.save`` file names (``{"models.yolo", "torch.nn.modules.conv", ...}``),
    read from its pickle opcodes without executing anything; empty if the file is not a torch zip archive."""
    try:
        with zipfile.ZipFile(path) as zf:
            name = next((n for n in zf.namelist() if n.endswith("/data.pkl") or n == "data.pkl"), None)
            if name is None:
                return set()
            data = zf.read(name)
    except (zipfile.BadZipFile, OSError):
        return set()
    modules: set[str] = set()
    recent: list[str] = []  # STACK_GLOBAL (protocol 4+) takes module and name from the two last strings
    try:
        for op, arg, _ in pickletools.genops(data):
            if op.name == "GLOBAL":
                modules.add(str(arg).split(" ", 1)[0])
            elif op.name in ("SHORT_BINUNICODE", "BINUNICODE", "UNICODE", "BINUNICODE8"):
                recent = (recent + [str(arg)])[-2:]
            elif op.name == "STACK_GLOBAL" and len(recent) == 2:
                modules.add(recent[0])
    except Exception:  # a damaged pickle: torch.load reports it properly later
        pass
    return modules


def missing_modules(modules: Iterable[str]) -> list[str]:
    """The names in ``modules`` that cannot be imported here (looked up without importing the modules' code
    beyond their parent packages)."""
    missing = []
    for module in modules:
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):  # a missing parent package
            found = False
        if not found:
            missing.append(module)
    return missing
