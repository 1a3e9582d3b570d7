"""What each component kind provides: the interfaces the pipeline and evaluator call.

:mod:`glotok_bench.hookspecs` says how a component is *declared* (a hook returning
``Component(name, "module:Class", summary)``); this module says what the declared class
must *do*. Every kind is built as ``Cls(config, **context)`` with ``config`` an instance of
its nested frozen-attrs ``Config`` (see the hook docs for each kind's context). The
pipeline, the evaluator and the leaderboard reach components only through these
interfaces, never through a built-in's field names, so a plugin is used exactly like a
built-in. ``tests/test_contracts.py`` runs every registered component of each kind
through its interface.

The Protocols are structural (``typing.Protocol``): a plugin need not import or subclass
anything from here.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, Protocol, runtime_checkable

# -- tokenizer parts --------------------------------------------------------------------


@runtime_checkable
class QuantizerConfig(Protocol):
    """A quantizer's ``Config``: what leaderboards and supervision need, with no torch.

    ``codebook_label()`` names the codebook layout in a leaderboard row (``"4096+12288"``
    for semantic + visual, ``"16384"`` for one codebook); ``semantic_dim()`` is the width
    of the codes semantic supervision sees (the semantic branch, or the only one).
    """

    def codebook_label(self) -> str: ...

    def semantic_dim(self) -> int: ...


class Quantizer(Protocol):
    """Built as ``Quantizer(config, in_channels=...)``: an ``nn.Module`` mapping encoder
    features [B, in_channels, h, w] to a ``QuantizerOutput`` (``branches``, ``loss``, ``stats``).

    Attributes: ``codebook_sizes`` {branch: size}, ``code_dims`` {branch: d},
    ``out_channels`` (sum of d), ``branch_names`` (decoder order). Methods: ``lookup``
    ({branch: indices} -> {branch: codes}), ``codebook_weight(branch)``, ``window_usage``.
    """

    Config: ClassVar[type]
    codebook_sizes: dict[str, int]
    code_dims: dict[str, int]
    out_channels: int

    def lookup(self, indices: dict[str, Any]) -> dict[str, Any]: ...

    def codebook_weight(self, name: str) -> Any: ...


class Autoencoder(Protocol):
    """Built as ``Autoencoder(config, resolution=...)``: ``encode(images) -> features``,
    ``decode(features) -> images``, ``z_channels``, ``grid_size``, ``last_layer()``."""

    z_channels: int
    grid_size: int

    def encode(self, images: Any) -> Any: ...

    def decode(self, features: Any) -> Any: ...

    def last_layer(self) -> Any: ...


class ResidualHead(Protocol):
    """Built as ``ResidualHead(config, channels=...)``: ``head(quantized)`` predicts
    Z - Z_hat (or returns None: no residual) and ``loss(continuous, quantized, residual,
    code=...)`` is L_res; ``code`` is the branch's codes with their gradient to the
    codebook (``QuantizedBranch.code``), for heads whose L_res trains the codebook."""

    def __call__(self, quantized: Any) -> Any: ...

    def loss(self, continuous: Any, quantized: Any, residual: Any, code: Any = None) -> Any: ...


# -- supervision and teachers -------------------------------------------------------------


class Supervision(Protocol):
    """Semantic supervision; built as ``Supervision(config, semantic_dim=..., device=...)``.

    ``uses_teacher_codebook``: the loss relates the semantic codebook to a teacher
    codebook. Such a supervision's ``Config`` has ``teacher_file: str``; when it is empty
    the pipeline builds the configured teacher and passes its file there, and the
    leaderboard row names that teacher.
    """

    uses_teacher_codebook: ClassVar[bool]

    def loss(self, semantic_codebook: Any, quantized_semantic: Any, images: Any) -> Any: ...

    def describe(self) -> dict[str, Any]: ...


class Teacher(Protocol):
    """A teacher codebook source; built as ``Teacher(config)``.

    ``build(cache_dir, device)`` returns l2-normalised codes [k, d]. Optional:
    ``label(config) -> str`` (a classmethod: what the leaderboard calls this teacher;
    default :func:`teacher_label`'s name-plus-changed-options), ``cache_file(cache_dir)``
    (where ``build`` keeps its codes) and ``with_data(config, image_root)`` (a classmethod
    filling in the training images when the config names none).
    """

    def build(self, cache_dir: Path | str, device: Any = "cpu") -> Any: ...


def teacher_label(name: str, teacher_class: type, config: Any) -> str:
    """The leaderboard label of teacher ``name``: its own ``label(config)`` when it has one,
    else the name plus every option that differs from its default."""
    own = getattr(teacher_class, "label", None)
    if own is not None:
        return own(config)
    changed = changed_options(config)
    return f"{name}({', '.join(changed)})" if changed else name


def changed_options(config: Any, ignore: frozenset[str] | set[str] = frozenset()) -> list[str]:
    """``["k=252", ...]``: the options of an attrs ``config`` that differ from its defaults."""
    import attrs

    defaults = type(config)()
    return [
        f"{field.name}={getattr(config, field.name)}"
        for field in attrs.fields(type(config))
        if field.name not in ignore and getattr(config, field.name) != getattr(defaults, field.name)
    ]


# -- evaluation and generation --------------------------------------------------------------


@runtime_checkable
class Metric(Protocol):
    """A metric; built as ``Metric(config, **context)`` with the evaluation context
    ``device``, ``data_protocol`` and ``codebook_sizes`` (each takes the keys it needs).

    ``update(batch)`` takes an :class:`~glotok_bench.eval.batch.EvalBatch`; ``merge``
    folds another instance's state in (workers, ranks); ``compute`` maps result names to
    ``{"value", "protocol"}``. Optional: ``runs_by_default = True`` (a class attribute)
    makes every evaluation run it with its default ``Config`` unless ``[eval.extra_metrics]
    NAME = false``; ``write_artifacts(out_dir) -> {name: path}`` writes the metric's own
    files (plots, raw values) after ``compute``.
    """

    def update(self, batch: Any) -> None: ...

    def merge(self, other: Any) -> Any: ...

    def compute(self) -> dict[str, dict[str, Any]]: ...


def write_metric_artifacts(metric: Any, out_dir: Path) -> dict[str, str]:
    """The files ``metric`` writes for itself (none if it has no ``write_artifacts``)."""
    writer = getattr(metric, "write_artifacts", None)
    return dict(writer(out_dir)) if writer is not None else {}


class Generator(Protocol):
    """Built as ``Generator(config, codebook_sizes=..., grid_size=..., channels=...,
    num_classes=...)``: an ``nn.Module`` trained on token sets (see
    :mod:`glotok_bench.generators`), with ``config`` kept on the instance."""

    config: Any


class Dataset(Protocol):
    """Built as ``Dataset(config, split=..., resolution=..., train=...)``: a map-style
    dataset yielding ``(image [3, R, R] in [-1, 1], label, ...)`` (glotok's own add the
    index and why an unreadable image was skipped) with ``protocol() -> dict`` (what goes
    into every metric computed on it)."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> Any: ...

    def protocol(self) -> Mapping[str, Any]: ...
