"""Streaming evaluation of a tokenizer over a DataLoader.

Per batch: reconstruct, wrap originals, reconstructions and the encoding in an
:class:`~glotok_bench.eval.batch.EvalBatch`, and let every metric take what it needs. No
image outlives its batch except the few kept for the PNGs; metrics keep only sufficient
statistics. The result maps metric names to ``{"value", "protocol"}`` (the run-record
format) plus run information: counts, wall time, throughput, peak memory, device,
library versions, skipped files, written artifacts.

Tokenizer interface used: ``tokenizer(images).reconstruction`` [B, 3, H, W];
``.encoding`` on that output when present, else ``tokenizer.encode(images)`` (``.indices``
{branch: [B, h, w]}, ``.branches``); ``tokenizer.codebook_sizes``; and for Fig. 4
``encode``/``decode`` (and ``concat`` when it has one).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import attrs
import torch

from glotok_bench.errors import MissingWeightsError
from glotok_bench.eval.batch import EvalBatch, Metric
from glotok_bench.eval.extractors import full_fp32
from glotok_bench.eval.fig4 import DEFAULT_RETENTION, save_retention_grid
from glotok_bench.eval.image_grid import save_image_grid
from glotok_bench.eval.options import (  # noqa: F401 - EvalOptions and its helpers live there (torch-free)
    METRIC_NAME,
    EvalOptions,
    RetentionConfig,
    metric_options,
)
from glotok_bench.interfaces import write_metric_artifacts

SAMPLES_PNG = "reconstructions.png"
FIG4_PNG = "fig4_retention.png"


@attrs.define
class EvalResult:
    metrics: dict[str, dict[str, Any]]
    info: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return {"metrics": self.metrics, "info": self.info}


def build_metrics(
    options: EvalOptions,
    *,
    device: torch.device | str,
    data_protocol: Mapping[str, Any],
    codebook_sizes: Mapping[str, int],
) -> tuple[dict[str, Metric], dict[str, str]]:
    """The metrics ``options`` switches on, each built by the registry from its ``Config``
    and the evaluation context, and {key: why skipped} for those switched off."""
    from glotok_bench.registry import get_registry

    registry = get_registry()
    context = {
        "device": device,
        "data_protocol": dict(data_protocol),
        "codebook_sizes": dict(codebook_sizes),
    }
    chosen, skipped = options.metric_configs(registry)
    metrics: dict[str, Metric] = {}
    for key, (name, config) in chosen.items():
        try:
            metrics[key] = registry.create("metric", name, config, **context)
        except MissingWeightsError as exc:
            if key != "lpips" or options.lpips_required:
                raise
            skipped[key] = str(exc)
    return metrics, skipped


def _unpack(batch: Any) -> tuple[torch.Tensor, torch.Tensor | None, list[str]]:
    """A loader batch -> (images [B, 3, H, W], dataset indices [B] or None, unreadable files)."""
    if isinstance(batch, Mapping):
        return batch["images"], batch.get("indices"), list(batch.get("skipped", []))
    if isinstance(batch, (tuple, list)):
        return batch[0], None, []
    return batch, None, []


def _loader_total(loader: Any) -> int | None:
    try:
        return len(loader.sampler)  # images this rank will see
    except (AttributeError, TypeError):
        return None


def evaluate_tokenizer(
    tokenizer: Any,
    loader: Iterable[Any],
    metrics: Mapping[str, Metric],
    *,
    device: torch.device | str = "cpu",
    out_dir: str | Path | None = None,
    sample_images: int = 8,
    fig4: RetentionConfig | None = DEFAULT_RETENTION,
    fig4_images: int = 4,
    progress: bool = True,
) -> EvalResult:
    """Run ``tokenizer`` over ``loader`` once, feeding every metric; then compute them.

    ``loader`` yields dicts with ``images`` [B, 3, H, W] in [-1, 1] (and ``indices``,
    ``skipped``, as glotok_bench's loaders do), (images, ...) tuples, or image tensors.
    PNGs go to ``out_dir`` when given.
    """
    from tqdm import tqdm

    from glotok_bench.device import describe_device, peak_memory_bytes
    from glotok_bench.records import package_versions

    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    tokenizer = tokenizer.to(device).eval()
    started = time.perf_counter()
    update_seconds = dict.fromkeys(metrics, 0.0)
    tokenizer_seconds = 0.0
    images_seen, batches = 0, 0
    unreadable: list[str] = []
    kept_real: list[torch.Tensor] = []
    kept_fake: list[torch.Tensor] = []
    bar = tqdm(
        total=_loader_total(loader), unit="img", desc="evaluate", disable=not progress, leave=False
    )
    with bar:
        for raw in loader:
            images, ids, skipped = _unpack(raw)
            unreadable += [reason for reason in skipped if reason not in unreadable]
            if images.numel() == 0:
                continue
            images = images.to(device, non_blocking=True).float()
            tick = time.perf_counter()
            # Full fp32 (TF32 off on CUDA): reconstructions, like features, must not depend
            # on the GPU generation's default matmul/conv precision.
            with torch.inference_mode(), full_fp32():
                output = tokenizer(images)
                reconstruction = output.reconstruction.float().clamp(-1, 1)
                encoding = getattr(output, "encoding", None)
                if encoding is None:
                    encoding = tokenizer.encode(images)
            tokenizer_seconds += time.perf_counter() - tick
            batch = EvalBatch(real=images, fake=reconstruction, encoding=encoding, sample_ids=ids)
            for name, metric_object in metrics.items():
                tick = time.perf_counter()
                metric_object.update(batch)
                update_seconds[name] += time.perf_counter() - tick
            if sum(len(kept) for kept in kept_real) < max(sample_images, fig4_images):
                kept_real.append(images.cpu())
                kept_fake.append(reconstruction.cpu())
            images_seen += images.shape[0]
            batches += 1
            bar.update(images.shape[0])
    if images_seen == 0:
        from glotok_bench.errors import DataError

        raise DataError(f"no readable image to evaluate ({len(unreadable)} unreadable): " + "; ".join(unreadable[:3]))
    stream_seconds = time.perf_counter() - started

    results: dict[str, dict[str, Any]] = {}
    compute_seconds: dict[str, float] = {}
    for name, metric_object in metrics.items():
        tick = time.perf_counter()
        for key, value in metric_object.compute().items():
            if key in results:
                raise ValueError(f"two metrics both report {key!r}")
            results[key] = value
        compute_seconds[name] = time.perf_counter() - tick

    artifacts = {}
    if out_dir is not None:
        for metric_object in metrics.values():
            artifacts.update(write_metric_artifacts(metric_object, Path(out_dir)))
    if out_dir is not None and kept_real:
        real, fake = torch.cat(kept_real), torch.cat(kept_fake)
        if sample_images > 0:
            n = min(sample_images, len(real))
            path = save_image_grid([list(real[:n]), list(fake[:n])], Path(out_dir) / SAMPLES_PNG)
            artifacts["reconstructions_png"] = str(path)
        if fig4 is not None and fig4_images > 0:
            branches = set(getattr(tokenizer, "codebook_sizes", {}) or {})
            if {fig4.semantic_branch, fig4.visual_branch} <= branches:
                path = save_retention_grid(
                    tokenizer, real[:fig4_images].to(device), Path(out_dir) / FIG4_PNG, fig4
                )
                artifacts["fig4_png"] = str(path)
            else:
                artifacts["fig4_png"] = (
                    f"skipped: needs {fig4.semantic_branch!r} and {fig4.visual_branch!r} branches"
                )

    wall = time.perf_counter() - started
    info = {
        "images": images_seen,
        "batches": batches,
        "wall_s": wall,
        "stream_s": stream_seconds,
        "images_per_s": images_seen / stream_seconds if stream_seconds > 0 else None,
        "tokenizer_s": tokenizer_seconds,
        "metric_update_s": update_seconds,
        "metric_compute_s": compute_seconds,
        "peak_memory_bytes": peak_memory_bytes(device),
        "peak_memory_scope": "CUDA allocator peak during evaluation"
        if device.type == "cuda"
        else "process peak resident set size",
        "device": describe_device(device),
        "versions": package_versions(),
        "unreadable_images": {"count": len(unreadable), "files": unreadable},
        "artifacts": artifacts,
    }
    return EvalResult(results, info)


def run_evaluation(
    tokenizer: Any,
    dataset: torch.utils.data.Dataset,
    options: EvalOptions | None = None,
    *,
    device: torch.device | str = "cpu",
    batch_size: int = 32,
    num_workers: int = 0,
    out_dir: str | Path | None = None,
) -> EvalResult:
    """Build the loader (dataset order, no augmentation) and the metrics, then evaluate.

    ``dataset`` yields ``(image, label, index, error)`` like glotok_bench's datasets and has
    ``protocol()``. Metrics that were skipped are listed in ``info["skipped_metrics"]``.
    """
    from glotok_bench.data.loaders import make_loader

    options = options or EvalOptions()

    protocol = dataset.protocol() if hasattr(dataset, "protocol") else {}
    metrics, skipped = build_metrics(
        options,
        device=device,
        data_protocol=protocol,
        codebook_sizes=getattr(tokenizer, "codebook_sizes", {}) or {},
    )
    loader = make_loader(dataset, batch_size=batch_size, num_workers=num_workers)
    result = evaluate_tokenizer(
        tokenizer,
        loader,
        metrics,
        device=device,
        out_dir=out_dir,
        sample_images=options.sample_images,
        fig4=options.fig4,
        fig4_images=options.fig4_images,
        progress=options.progress,
    )
    result.info["skipped_metrics"] = skipped
    result.info["data_protocol"] = protocol
    return result
