"""gFID / IS of generated samples (an ADM-layout ``.npz``) against a reference dataset."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from glotok_bench.data.imagefolder import SkippedImages
from glotok_bench.data.loaders import make_loader, readable_batches
from glotok_bench.eval.batch import EvalBatch
from glotok_bench.eval.fidelity import FrechetDistance, InceptionScore


def evaluate_samples(
    npz_path: str | Path,
    reference: torch.utils.data.Dataset,
    *,
    fid: FrechetDistance.Config,
    inception_score: InceptionScore.Config | None,
    device: torch.device | str = "cpu",
    batch_size: int = 64,
    sampling_protocol: dict[str, Any] | None = None,
) -> dict[str, dict[str, Any]]:
    """Metrics keyed by name, each with its protocol (reference data + sampling settings).

    The reference side streams from ``reference`` unless ``fid.reference_stats`` names an
    external statistics file or a cached copy exists. The samples file is read whole as
    uint8, as the ADM evaluator does (50k x 256 px is ~9.8 GB).
    """
    protocol = reference.protocol() if hasattr(reference, "protocol") else {}
    metrics: list[Any] = [FrechetDistance(fid, device=device, data_protocol=protocol)]
    if inception_score is not None:
        metrics.append(InceptionScore(inception_score, device=device, data_protocol=protocol))
    fid_metric = metrics[0]
    if fid_metric.needs_real:
        skipped = SkippedImages()
        loader = make_loader(reference, batch_size=batch_size)
        for batch in readable_batches(loader, skipped):
            fid_metric.update(EvalBatch(real=batch["images"].to(device)))
    samples = np.load(npz_path)["arr_0"]
    for start in range(0, len(samples), batch_size):
        chunk = torch.from_numpy(samples[start : start + batch_size]).to(device)
        fake = chunk.permute(0, 3, 1, 2).float().div(127.5).sub(1.0)
        for metric in metrics:
            metric.update(EvalBatch(fake=fake))
    results: dict[str, dict[str, Any]] = {}
    for metric in metrics:
        for name, value in metric.compute().items():
            value["protocol"] = {**value["protocol"], "sampling": sampling_protocol or {}}
            results[name] = value
    return results
