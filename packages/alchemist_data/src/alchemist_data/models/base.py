"""What every model wrapper shares: load once on first use, one error when a model cannot be loaded, one notice when
a model runs with random weights.

:class:`LazyModel` is the base of the Grounder, Segmenter, FaceDetector and Inpainter backends and of the benchmark's
encoders. Building one is cheap (profiles build them to validate settings); the weights load in
:meth:`LazyModel.setup`, once per process, so a Ray actor pays for loading in its own ``setup`` and never inside a
batch. :class:`ModelLoadError` and :func:`random_weights_notice` are used by all three packages.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np


class ModelLoadError(OSError, ValueError):
    """A model that was asked for could not be loaded: not a local folder, not in the hub cache, hub unreachable, or
    not the expected format. The message says what failed and what to pass instead.

    It is an ``OSError`` (what loading a file or a hub id raises) and a ``ValueError`` (a model id is user input), so
    callers that catch either keep working.
    """


def random_weights_notice(components: Sequence[str], consequence: str, remedy: str, context: str = "") -> str:
    """The one wording of the loud "random weights" announcement: which models are random, what that means for the
    results, and how to get real ones. ``context`` (e.g. "profile 'offline'") opens the sentence."""
    names = ", ".join(components)
    verb = "is" if len(components) == 1 else "are"
    opening = f"{context}: " if context else ""
    return f"{opening}{names} {verb} RANDOMLY INITIALISED (no real weights were loaded). {consequence} {remedy}"


class LazyModel(ABC):
    """Base: ``setup()`` calls the backend's ``_load()`` once; ``is_random`` marks small random stand-in models."""

    name: str = "model"
    is_random: bool = False

    def __init__(self, device: str = "cpu") -> None:
        self.device = device
        self._ready = False

    def setup(self) -> None:
        if not self._ready:
            self._load()
            self._ready = True

    @abstractmethod
    def _load(self) -> None:
        """Load the model (called once by setup())."""


def check_rgb(image: Any, what: str = "image") -> np.ndarray:
    """``image`` as an RGB uint8 ``HxWx3`` array (what every model here takes), else a ValueError naming ``what``."""
    arr = np.asarray(image)
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.dtype != np.uint8:
        raise ValueError(f"{what} must be an RGB uint8 array of shape HxWx3, got {arr.shape} {arr.dtype}")
    return arr


def check_local_path(model: str, what: str) -> None:
    """A model id that is clearly a filesystem path must exist (else the hub client reports a confusing repo-id
    error)."""
    # hub ids are "name" or "namespace/name"; anything else is a path
    looks_local = model.startswith((".", "/", "~")) or model.count("/") > 1 or os.path.isabs(model)
    if looks_local and not os.path.exists(os.path.expanduser(model)):
        raise FileNotFoundError(f"{what} not found: {model} (give an existing local directory or a hub id)")


def offline_hint(
    what: str, exc: Exception, instead: str = "a local directory, a cached hub id, or 'random-small'"
) -> str:
    """The message for a model that failed to load: the cause, whether offline mode explains it, and what to pass."""
    offline = os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0")
    extra = " (HF_HUB_OFFLINE is set, so only local directories or cached hub ids work)" if offline else ""
    return f"could not load {what}{extra}: {exc}. Pass {instead}."


def load_pretrained(
    model_id: str,
    what: str,
    classes: Sequence[Any],
    random: Callable[[str], Any],
    instead: str = "a local directory, a cached hub id, or 'random-small'",
    **kwargs: Any,
) -> Any:
    """``random(model_id)`` for a random stand-in ("random-tiny" / "random-small"), else ``cls.from_pretrained`` of
    the hub id or local directory for each class (e.g. ``(model class, processor class)``), as a tuple.

    ``kwargs`` go to every ``from_pretrained``. A path-like id that does not exist fails with FileNotFoundError, and
    a model that cannot be loaded with :class:`ModelLoadError`, both naming ``what``; ``instead`` says what to pass.
    """
    from alchemist_data.models.tiny import RANDOM_SIZES  # torch-heavy: imported only when a model is loaded

    if model_id in RANDOM_SIZES:
        return random(model_id)
    check_local_path(model_id, f"{what} model directory")
    try:
        return tuple(cls.from_pretrained(model_id, **kwargs) for cls in classes)
    except (OSError, ValueError, TypeError) as exc:  # transformers raises any of them, depending on what is missing
        raise ModelLoadError(offline_hint(f"{what} model {model_id!r}", exc, instead)) from exc


class PretrainedPair:
    """Mixin of the transformers backends: ``model_id`` (hub id, local dir, or a random size) names a model and its
    processor, which :meth:`_load_pair` loads with :func:`load_pretrained` and puts on ``device`` in eval mode."""

    device: str

    def _init_pair(self, model_id: str) -> None:
        from alchemist_data.models.tiny import RANDOM_SIZES  # torch-heavy: the backends that use this import it anyway

        self.model_id = model_id
        self.is_random = model_id in RANDOM_SIZES
        self.model: Any = None
        self.processor: Any = None

    def _load_pair(self, what: str, classes: Sequence[Any], random: Callable[[str], Any]) -> None:
        model, self.processor = load_pretrained(self.model_id, what, classes, random)
        self.model = model.to(self.device).eval()
