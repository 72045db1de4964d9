"""Checks shared by the tests of the stages' model builders (``build_grounder``, ``build_segmenter``,
``build_inpainter``): each takes its stage's section of a curation profile and picks a backend from it."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from alchemist_data.profiles import curation_profile


def built_per_profile(build: Callable, section: str, *profiles: str) -> list:
    """``build`` of the ``section`` config (e.g. ``"grounding"``) of each curation profile named in ``profiles``."""
    return [build(getattr(curation_profile(name), section)) for name in profiles]


def assert_unknown_backend_refused(build: Callable, section: str, backend: str) -> None:
    """``build`` of the tiny profile's ``section`` config with ``backend`` swapped in raises a ValueError naming the
    section: an unknown backend is a configuration error, not a silent fallback."""
    cfg = getattr(curation_profile("tiny"), section)
    cfg.backend = backend
    with pytest.raises(ValueError, match=f"unknown {section} backend"):
        build(cfg)
