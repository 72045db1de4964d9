"""The one config kit of the project: curation, model and eval configs are nested dataclasses handled here.

* :func:`apply_override` / :func:`apply_overrides` set ``section.field`` from a CLI string, parsed by the field's type
  (the ``--set`` flag of every command);
* :func:`parse_overrides` turns ``["a.b=1", ...]`` into ``{"a.b": "1"}``;
* :func:`to_dict` serialises a config (``run.json``, checkpoints, eval summaries);
* :func:`check_choice` is the one "value must be one of" check;
* :class:`Resources` and :class:`StageConfig` are what every curation stage's config carries (NeMo Curator's
  pattern: the stage is built from its config, and the config says what the stage asks of Ray);
* :func:`cache_dir` is the one cache folder (``ALCHEMIST_CACHE``) for tiny models, WordNet tables and the like.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar


@dataclass(kw_only=True)
class Resources:
    """What one worker of a stage asks Ray for."""

    cpus: float = 1.0
    gpus: float = 0.0
    memory_mb: int = 0


@dataclass(kw_only=True)
class StageConfig:
    """Fields every curation stage's config has: its Ray resources and the rows it processes per call."""

    batch_size: int = 16
    resources: Resources = field(default_factory=Resources)
    # Ray actor pool bounds: the pool grows from min_workers to max_workers while work waits (0 = --num-workers).
    min_workers: int = 1
    max_workers: int = 0
    #: ``{"section.field": allowed values}``: the fields that take one of a few names, checked by ``validate``
    choices: ClassVar[dict[str, tuple[str, ...]]] = {}

    @property
    def enabled(self) -> bool:
        """False when the settings switch the stage off: it is then left out of the pipeline (no idle actor pool);
        its columns stay null."""
        return True

    def validate(self) -> None:
        """Fail before any work on a value the stage does not understand (subclasses check their other fields)."""
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {self.batch_size}")
        if self.min_workers < 1 or self.max_workers < 0 or (self.max_workers and self.max_workers < self.min_workers):
            raise ValueError(
                f"min_workers={self.min_workers}, max_workers={self.max_workers}: need 1 <= min_workers <= "
                "max_workers (max_workers 0 means --num-workers)"
            )
        for key, allowed in self.choices.items():
            check_choice(key, getattr(self, key.rpartition(".")[2]), allowed)


def check_choice(key: str, value: str, allowed: Iterable[str]) -> None:
    allowed = tuple(allowed)
    if value not in allowed:
        raise ValueError(f"{key}={value!r} is not one of {', '.join(allowed)}")


def cache_dir() -> Path:
    """The project's one cache folder: ``$ALCHEMIST_CACHE``, else ``$XDG_CACHE_HOME/alchemist``, else
    ``~/.cache/alchemist``."""
    if os.environ.get("ALCHEMIST_CACHE"):
        return Path(os.environ["ALCHEMIST_CACHE"])
    xdg = os.environ.get("XDG_CACHE_HOME")
    return Path(xdg) / "alchemist" if xdg else Path.home() / ".cache" / "alchemist"


def to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def apply_overrides(cfg: Any, overrides: Mapping[str, str] | None) -> Any:
    """Apply ``{"section.field": "value"}`` to ``cfg`` in place and return it."""
    for key, raw in (overrides or {}).items():
        apply_override(cfg, key, raw)
    return cfg


def apply_override(obj: Any, dotted: str, raw: str) -> None:
    """Set ``section.field`` of a (nested) config dataclass from a CLI string, parsed by the field's current type
    (bool, int, float, comma-separated tuple; JSON for anything else, falling back to the plain string)."""
    *path, leaf = dotted.strip().split(".")
    target = obj
    for part in path:
        if not dataclasses.is_dataclass(target) or not hasattr(target, part):
            raise ValueError(f"unknown config section {part!r} in {dotted!r}")
        target = getattr(target, part)
    fields = {f.name for f in dataclasses.fields(target)} if dataclasses.is_dataclass(target) else set()
    if leaf not in fields:
        raise ValueError(f"unknown config field {dotted!r}; fields here are {', '.join(sorted(fields))}")
    current = getattr(target, leaf)
    try:
        if isinstance(current, bool):
            if raw.lower() not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
                raise ValueError(f"expected true/false, got {raw!r}")
            value: Any = raw.lower() in ("1", "true", "yes", "on")
        elif isinstance(current, int):
            value = int(raw)
        elif isinstance(current, float):
            value = float(raw)
        elif isinstance(current, tuple):
            value = tuple(json.loads(raw)) if raw.startswith("[") else tuple(float(x) for x in raw.split(","))
        elif isinstance(current, str):
            value = raw
        else:
            try:
                value = json.loads(raw)
            except json.JSONDecodeError:
                value = raw
    except ValueError as err:
        raise ValueError(f"--set {dotted}={raw}: {err}") from err
    setattr(target, leaf, value)


def parse_overrides(items: list[str] | None) -> dict[str, str]:
    out = {}
    for item in items or []:
        if "=" not in item:
            raise ValueError(f"--set expects section.field=value, got {item!r}")
        k, v = item.split("=", 1)
        out[k.strip()] = v.strip()
    return out
