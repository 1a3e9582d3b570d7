"""The evaluation section of a run config and the options of the built-in metrics.

Torch-free on purpose: run configs import this module, and loading or showing a config
must not pay for torch. Each metric class (in its own, torch-using module) takes its
``Config`` from here (``Config = FrechetDistanceConfig``), so a metric still carries its
``Config`` as the plugin convention says.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs


@attrs.frozen(kw_only=True)
class FrechetDistanceConfig:
    label: str = (
        "rfid"  # "rfid": reconstructions vs their dataset; "gfid": samples vs a reference
    )
    extractor: str = "auto"  # "auto" | "inception" | "standin"
    inception_weights: str = ""  # explicit local Inception file; "" = weight-resolution hook
    reference_stats: str = ""  # external mu/sigma .npz (ADM layout); "" = cache or real images
    cache_dir: str = ""  # "" = $GLOTOK_STATS_DIR or ~/.cache/glotok_bench/fid-stats
    cache: bool = True


@attrs.frozen(kw_only=True)
class InceptionScoreConfig:
    label: str = "is"
    extractor: str = "auto"  # "auto" | "inception" | "standin"
    inception_weights: str = ""
    splits: int = 10


@attrs.frozen(kw_only=True)
class KernelDistanceConfig:
    """KID's options; torch-fidelity's defaults (see eval/kid.py)."""

    label: str = "rkid"
    extractor: str = "auto"  # "auto" | "inception" | "standin", as for FID
    inception_weights: str = ""
    subsets: int = attrs.field(default=100, validator=attrs.validators.ge(1))
    subset_size: int = attrs.field(default=1000, validator=attrs.validators.ge(2))
    degree: int = attrs.field(default=3, validator=attrs.validators.ge(1))
    gamma: float = 0.0  # 0: 1 / feature dimension
    coef0: float = 1.0
    seed: int = 2020  # torch-fidelity's rng_seed
    # Write both sides' features (float32, n x d each) beside the record for paired and
    # bootstrap comparisons: 0.6 MB for the demo's 168 stand-in pairs, 800 MB for 50k
    # Inception pairs; false keeps them in memory only.
    write_features: bool = True


@attrs.frozen(kw_only=True)
class PSNRConfig:
    pass


@attrs.frozen(kw_only=True)
class SSIMConfig:
    window: int = 7


@attrs.frozen(kw_only=True)
class LPIPSConfig:
    vgg_weights: str = ""  # torchvision vgg16-397923af.pth; "" = weight-resolution hook
    lin_weights: str = ""  # LPIPS v0.1 vgg.pth linear layers; "" = weight-resolution hook


@attrs.frozen(kw_only=True)
class CodebookUsageConfig:
    pass


@attrs.frozen(kw_only=True)
class LatentUniformityConfig:
    branch: str = "auto"  # "auto": "semantic" if present, else the only branch
    source: str = "quantized"  # the paper uses the quantized semantic latents Z_hat_sem
    samples: int = 10_000
    repeats: int = 10  # VA-VAE averages 10 runs
    draws_per_image: int = 1  # positions drawn per image; >1 only for tiny sets
    perplexity: float = 30.0
    tsne_iterations: int = 1000  # scikit-learn's default, as VA-VAE ran it; >= 250
    seed: int = 42


@attrs.frozen(kw_only=True)
class RetentionConfig:
    ratios: tuple[float, ...] = (0.25, 0.5, 0.75, 1.0)
    mode: str = "channels"  # "channels" | "positions" (see eval/fig4.py)
    source: str = "with_residual"  # which latents the decoder gets: "with_residual" | "quantized"
    semantic_branch: str = "semantic"
    visual_branch: str = "visual"
    seed: int = 0  # picks the kept positions in "positions" mode


METRIC_NAME = "glotok_metric_name"  # field metadata: the registered metric a field configures


def metric_options(name: str, default: Any) -> Any:
    """An :class:`EvalOptions` field holding registered metric ``name``'s ``Config``."""
    return attrs.field(default=default, metadata={METRIC_NAME: name})


def _plugin_metric_config(name: str, options: Any) -> Any:
    """The typed ``Config`` of registered metric ``name`` from its options table (``true``:
    its defaults)."""
    from glotok_bench.config import structure
    from glotok_bench.registry import get_registry

    config_class = get_registry().config_class("metric", name)
    return structure(config_class, {} if options is True else dict(options), source=f"eval.extra_metrics.{name}")


def _check_extra_metrics(_instance: Any, _attribute: attrs.Attribute, value: Mapping[str, Any]) -> None:
    # Validated when the config loads, so a typo fails before training, not after it.
    from glotok_bench.errors import GlotokError

    for name, options in value.items():
        try:
            if options is not False:
                _plugin_metric_config(name, options)
        except GlotokError as exc:
            raise ValueError(str(exc)) from None


@attrs.frozen(kw_only=True)
class EvalOptions:
    """Which metrics run (a ``None`` config switches one off) and what gets written.

    Metrics come from the registry. The fields below are the options of the built-in ones
    (as configs have always spelled them); any other registered metric runs when
    ``extra_metrics`` names it, or by default when its class says ``runs_by_default``.
    """

    fid: FrechetDistanceConfig | None = metric_options("fid", FrechetDistanceConfig())
    # "ris": IS of reconstructions; plain "is" is reserved for generated samples (Table 2).
    inception_score: InceptionScoreConfig | None = metric_options(
        "inception-score", InceptionScoreConfig(label="ris")
    )
    # KID beside FID, on the same extractor choice; "rkid" for reconstructions.
    kid: KernelDistanceConfig | None = metric_options("kid", KernelDistanceConfig())
    psnr: PSNRConfig | None = metric_options("psnr", PSNRConfig())
    ssim: SSIMConfig | None = metric_options("ssim", SSIMConfig())
    lpips: LPIPSConfig | None = metric_options("lpips", LPIPSConfig())
    lpips_required: bool = False  # False: missing LPIPS weights skip LPIPS (and say so)
    usage: CodebookUsageConfig | None = metric_options("codebook-usage", CodebookUsageConfig())
    uniformity: LatentUniformityConfig | None = metric_options("uniformity", LatentUniformityConfig())
    sample_images: int = 8  # originals over reconstructions in reconstructions.png; 0: none
    fig4: RetentionConfig | None = RetentionConfig()
    fig4_images: int = 4
    progress: bool = True
    # Other registered metrics: {name: options}, e.g. in TOML
    # [eval.extra_metrics.my-metric]  threshold = 0.5
    # or `my-metric = true` (its defaults) / `= false` (off, for one that runs by default).
    extra_metrics: dict[str, dict[str, Any] | bool] = attrs.field(
        factory=dict, validator=_check_extra_metrics, hash=False
    )

    def metric_configs(self, registry: Any) -> tuple[dict[str, tuple[str, Any]], dict[str, str]]:
        """{key: (registered name, Config)} of the metrics to run, in a fixed order, and
        {key: why skipped} for those switched off. Keys: the field name of a built-in's
        options, else ``plugin:NAME``."""
        chosen: dict[str, tuple[str, Any]] = {}
        skipped: dict[str, str] = {}
        configured = set()
        for field in attrs.fields(type(self)):
            name = field.metadata.get(METRIC_NAME)
            if name is None:
                continue
            configured.add(name)
            config = getattr(self, field.name)
            if config is None:
                skipped[field.name] = "switched off"
            else:
                chosen[field.name] = (name, config)
        for name in registry.names("metric"):
            if name in configured:
                continue
            options = self.extra_metrics.get(name)
            if options is None and getattr(registry.load("metric", name), "runs_by_default", False):
                options = True
            if options is None or options is False:
                continue
            chosen[f"plugin:{name}"] = (name, _plugin_metric_config(name, options))
        # Named but not registered: let the registry say so (with a did-you-mean).
        for name in self.extra_metrics:
            if name not in configured and name not in registry.names("metric"):
                registry.get("metric", name)
        return chosen, skipped
