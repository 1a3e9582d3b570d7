"""How a generator draws samples: one options object for AR, FAR and xAR.

The same keywords travel from the ``[generation]`` config section through
:func:`~glotok_bench.generators.generate.generate` into each model's ``sample``. A field
left ``None`` takes the generator's own default, read from the same-named field of its
``Config`` (a preset sets the guidance and flow steps its paper evaluated with), so a
run record always stores the resolved values, never ``None``.

Torch-free on purpose: run configs import this module.
"""

from __future__ import annotations

from typing import Any, Literal

import attrs

from glotok_bench.errors import ConfigError
from glotok_bench.validators import FieldValueError, finite, non_negative, positive

CfgSchedule = Literal["constant", "linear"]
Integrator = Literal["euler", "euler_maruyama"]


def _top_p(_instance: Any, attribute: attrs.Attribute, value: float) -> None:
    if not 0.0 < value <= 1.0:  # also refuses NaN
        raise FieldValueError(attribute.name, f"must be in (0, 1], got {value!r}")


@attrs.frozen(kw_only=True)
class SamplingOptions:
    """Sampling settings; ``None`` fields are the generator's defaults (see :meth:`resolve`)."""

    # Classifier-free guidance; 1 is off. None: the preset's (FAR 2.0, xAR-B 2.7, xAR-H 2.2).
    cfg_scale: float | None = attrs.field(default=None, validator=finite)
    # "linear" ramps guidance from 1 at the first token (xAR: cell) to cfg_scale at the last.
    cfg_schedule: CfgSchedule | None = None
    # Discrete models: softmax temperature (0 = argmax); xAR: scale of each cell's noise.
    temperature: float = attrs.field(default=1.0, validator=non_negative)
    top_k: int = attrs.field(default=0, validator=non_negative)  # 0 keeps every code
    top_p: float = attrs.field(default=1.0, validator=_top_p)  # 1 keeps every code
    seed: int = 0
    kv_cache: bool = True  # False recomputes the whole prefix at every step (slow; a check)
    # xAR only: integrator and flow steps of the first and last cell (linear in between).
    sampler: Integrator | None = None
    steps_first: int | None = attrs.field(default=None, validator=positive)
    steps_last: int | None = attrs.field(default=None, validator=positive)

    def resolve(self, defaults: Any) -> SamplingOptions:
        """These options with every ``None`` replaced by ``defaults``' same-named attribute
        (a generator's ``Config``); fields ``defaults`` lacks stay ``None``."""
        filled = {
            field.name: getattr(defaults, field.name)
            for field in attrs.fields(SamplingOptions)
            if getattr(self, field.name) is None and hasattr(defaults, field.name)
        }
        return attrs.evolve(self, **filled) if filled else self

    @classmethod
    def of(cls, config: Any) -> SamplingOptions:
        """The sampling fields of ``config`` (a ``[generation]`` section that extends this class)."""
        return cls(**{field.name: getattr(config, field.name) for field in attrs.fields(cls)})

    def describe(self) -> dict[str, Any]:
        """Plain data for run records (``None`` fields left out)."""
        return {k: v for k, v in attrs.asdict(self).items() if v is not None}


def sampling_options(options: SamplingOptions | None = None, **changes: Any) -> SamplingOptions:
    """``options`` (default: all defaults) with ``changes`` applied; the keywords must be
    :class:`SamplingOptions` fields, so a typo is an error naming it, not silently ignored."""
    base = options if options is not None else SamplingOptions()
    if not changes:
        return base
    known = {field.name for field in attrs.fields(SamplingOptions)}
    unknown = sorted(set(changes) - known)
    if unknown:
        raise ConfigError(f"unknown sampling options {unknown}; known: {sorted(known)}")
    try:
        return attrs.evolve(base, **changes)
    except ValueError as exc:
        raise ConfigError(f"sampling options: {exc}") from None
