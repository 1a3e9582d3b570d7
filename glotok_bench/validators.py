"""attrs validators for config fields, shared by every config class (ours and plugins').

A failing validator raises :class:`FieldValueError`, which names its field, so the
config loader reports it at the full key path (``tokenizer.quantizer.code_dim: must be
> 0, got -4``). Non-finite floats are refused for every float field when a config loads
(see :func:`glotok_bench.config.structure`); these validators refuse them too, for
configs built in code.
"""

from __future__ import annotations

import math
from typing import Any

import attrs


class FieldValueError(ValueError):
    """A field's value is out of range; ``field`` is the field's name."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field} {message}")
        self.field = field
        self.message = message


def _number(attribute: attrs.Attribute, value: Any) -> float:
    if isinstance(value, float) and not math.isfinite(value):
        raise FieldValueError(attribute.name, f"must be a finite number, got {value!r}")
    return value


def finite(_instance: Any, attribute: attrs.Attribute, value: Any) -> None:
    """Not NaN or infinite (None passes: the field is optional)."""
    if value is not None:
        _number(attribute, value)


def positive(_instance: Any, attribute: attrs.Attribute, value: Any) -> None:
    """> 0 (None passes: the field is optional)."""
    if value is not None and not _number(attribute, value) > 0:
        raise FieldValueError(attribute.name, f"must be > 0, got {value!r}")


def non_negative(_instance: Any, attribute: attrs.Attribute, value: Any) -> None:
    """>= 0 (None passes: the field is optional)."""
    if value is not None and not _number(attribute, value) >= 0:
        raise FieldValueError(attribute.name, f"must be >= 0, got {value!r}")


def unit_interval(_instance: Any, attribute: attrs.Attribute, value: Any) -> None:
    """In [0, 1] (None passes: the field is optional)."""
    if value is not None and not 0 <= _number(attribute, value) <= 1:
        raise FieldValueError(attribute.name, f"must be in [0, 1], got {value!r}")
