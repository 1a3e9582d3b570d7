"""Every error the harness raises on purpose.

They all derive from :class:`GlotokError`, so the CLI can print them as one clear line
(no traceback) while real bugs still surface with their traceback.
"""

from __future__ import annotations


class GlotokError(Exception):
    """Base class: a problem with the user's input, files or environment."""


class ConfigError(GlotokError):
    """A config file or override is malformed: unknown key, wrong type, bad value."""


class RegistryError(GlotokError):
    """An unknown or duplicate component name, or a plugin that could not be loaded."""


class MissingWeightsError(GlotokError):
    """A pretrained file the run needs is not on disk. Nothing is ever downloaded."""


class CheckpointError(GlotokError):
    """A checkpoint is truncated, holds pickled code, or belongs to another model."""


class DataError(GlotokError):
    """A dataset is missing, empty, or has no readable image."""


class OutputError(GlotokError):
    """A result cannot be written: read-only folder, disk full, no permission."""
