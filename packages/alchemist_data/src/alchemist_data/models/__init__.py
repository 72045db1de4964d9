"""The vision models curation and evaluation share: GroundingDINO, SAM, face detectors, inpainters.

Each wrapper is a :class:`~alchemist_data.models.base.LazyModel` (cheap to build, loads in ``setup()``); their
settings are in :mod:`~alchemist_data.models.configs` and each profile's values in
:mod:`~alchemist_data.models.presets`.
"""
