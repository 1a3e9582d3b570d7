"""Every extension point of glotok-bench, in one place.

A plugin is a module (usually one small file) that implements some of the hooks below
with ``@hookimpl`` and is announced in its package's metadata under the ``glotok_bench``
entry-point group::

    [project.entry-points.glotok_bench]
    my-quantizer = "my_package.glotok_plugin"

The built-in components are registered exactly this way (see ``plugins/glotok_builtin``),
so anything they do a third-party plugin can do too.

Component hooks return a list of :class:`glotok_bench.registry.Component`. A component
names its implementation as a ``"module:attribute"`` string that is imported only when
the component is used, so listing plugins never imports torch. The implementation is a
class with a nested frozen-attrs ``Config`` (every field defaulted) and is constructed as
``Cls(config, **context)``; the context each kind receives is documented on its hook.
What the built instance (and its ``Config``) must provide is the kind's Protocol in
:mod:`glotok_bench.interfaces`: the pipeline and evaluator use nothing else.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    import click

    from glotok_bench.registry import Component

PROJECT_NAME = "glotok_bench"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


@hookspec
def glotok_datasets() -> list[Component]:
    """Image datasets. Context: ``split: str``, ``resolution: int``, ``train: bool``.

    The instance is a ``torch.utils.data.Dataset`` yielding ``(image[-1, 1], label)`` and
    exposes ``protocol() -> dict`` describing what it is (name, root, manifest hash,
    preprocessing), which goes into every metric computed on it.
    """


@hookspec
def glotok_autoencoders() -> list[Component]:
    """Encoder/decoder pairs (e.g. the VQGAN conv nets). Context: ``resolution: int``."""


@hookspec
def glotok_quantizers() -> list[Component]:
    """Quantizers mapping encoder features to codes. Context: ``in_channels: int``.

    Their ``Config`` reports ``codebook_label()`` and ``semantic_dim()``
    (:class:`glotok_bench.interfaces.QuantizerConfig`).
    """


@hookspec
def glotok_residual_heads() -> list[Component]:
    """Heads predicting what quantization lost (GloTok Eq. 8-12). Context: ``channels: int``."""


@hookspec
def glotok_semantic_supervision() -> list[Component]:
    """Semantic supervision of the semantic codebook: global (histogram) or local (InfoNCE).

    Context: ``semantic_dim: int``, ``device``. The instance is an ``nn.Module`` with
    ``loss(semantic_codebook, quantized_semantic, images) -> Tensor`` and ``describe()``;
    the class says ``uses_teacher_codebook`` (:class:`glotok_bench.interfaces.Supervision`).
    """


@hookspec
def glotok_teachers() -> list[Component]:
    """Teacher codebook sources for histogram relation learning. Context: none.

    The instance has ``build(cache_dir, device) -> Tensor[k, d]`` (l2-normalised codes);
    optional ``label``/``with_data``/``cache_file``: :class:`glotok_bench.interfaces.Teacher`.
    """


@hookspec
def glotok_generators() -> list[Component]:
    """Generators trained on tokenizer outputs (FAR, xAR, AR).

    Context: what the token data fixes: vocabulary sizes per branch, grid size,
    channels and number of classes.
    """


@hookspec
def glotok_metrics() -> list[Component]:
    """Metrics with ``update``/``merge``/``compute`` whose results carry their protocol.

    See :class:`glotok_bench.interfaces.Metric`: ``runs_by_default`` makes every
    evaluation run one; ``write_artifacts(out_dir)`` writes its own files.
    """


@hookspec
def glotok_tokenizer_formats() -> list[Component]:
    """Tokenizer checkpoint formats of other projects (built in: ``llamagen``, ``fqgan-dual``).

    Context: none. The instance has ``family: str`` (the name leaderboard rows show),
    ``detect(state_dict) -> bool`` (does this model state dict look like yours?) and
    ``build(state_dict, args, *, source, registry) -> Tokenizer``: a
    :class:`glotok_bench.tokenizer.model.Tokenizer` with the weights loaded, ``args`` being
    the checkpoint's saved training arguments as a dict (empty when absent). ``load_tokenizer``
    (hence every command taking a tokenizer checkpoint) reads the file without running
    code, unwraps ``{"model", "ema", "args", "steps", ...}``, and picks the one format
    whose ``detect`` accepts it (or the one named by ``format=``).
    """


@hookspec
def glotok_cli_commands(cli: click.Group) -> None:
    """Add click commands or groups to the ``glotok-bench`` command line."""


@hookspec(firstresult=True)
def glotok_resolve_weights(name: str) -> Path | None:
    """Map a pretrained-weight name (e.g. ``"inception-fid"``) to a local file.

    This is the only place where the policy for finding pretrained files lives. Return
    ``None`` to let the next plugin try. Implementations must never download anything;
    a name nobody resolves becomes a :class:`~glotok_bench.errors.MissingWeightsError`
    that says which file to put where.
    """
