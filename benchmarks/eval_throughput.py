"""Evaluation throughput (images/s) and peak memory, one row per configuration.

    python benchmarks/eval_throughput.py [--extractor standin inception] [--images 96]
        [--resolution 64] [--batch-size 16] [--tokenizer cpu-64] [--device auto]

Each configuration runs in a fresh child process, so its peak memory (max RSS on CPU,
the allocator peak on CUDA) is its own and not the largest of all runs so far. Rows are
appended to benchmarks/results/eval_throughput.csv (rewritten atomically). "inception"
runs only when the Inception file resolves (``--inception PATH``, $GLOTOK_WEIGHTS_DIR, or
$GLOTOK_WEIGHTS_INCEPTION_FID); otherwise that row is skipped with a message.

The measured loop is the evaluator's streaming pass: tokenizer forward, FID (real and
reconstruction features, the reference not cached), IS, PSNR, SSIM and codebook usage.
Uniformity (t-SNE) and the PNGs are a fixed cost per evaluation, not per image, and are
left out; LPIPS runs only with ``--lpips`` (it needs its weights).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
from pathlib import Path

from glotok_bench.benchmarking import append_csv_rows, run_child

RESULTS = Path(__file__).resolve().parent / "results" / "eval_throughput.csv"
COLUMNS = (
    "timestamp", "device", "torch", "extractor", "tokenizer", "resolution", "images", "batch_size",
    "images_per_s", "wall_s", "tokenizer_s", "fid_s", "inception_score_s", "psnr_s", "ssim_s",
    "usage_s", "lpips_s", "peak_memory_mb", "peak_memory_scope", "threads", "load_avg_1m", "note",
)  # fmt: skip


class _PoolTokenizer:
    """Fallback when the real tokenizer is unavailable: 8x average pooling and back."""

    codebook_sizes = {"codes": 256}

    def to(self, device):
        return self

    def eval(self):
        return self

    def __call__(self, images):
        from types import SimpleNamespace

        import torch.nn.functional as F

        pooled = F.avg_pool2d(images, 8)
        indices = ((pooled.mean(1) + 1) * 127.5).round().clamp(0, 255).long()
        encoding = SimpleNamespace(indices={"codes": indices}, branches={"codes": pooled})
        return SimpleNamespace(
            reconstruction=F.interpolate(pooled, scale_factor=8), encoding=encoding
        )


def _tokenizer(name: str, resolution: int):
    if name == "pool":
        return _PoolTokenizer(), "pool-8x"
    from glotok_bench.tokenizer.model import build_tokenizer, load_tokenizer_config

    tokenizer = build_tokenizer(load_tokenizer_config(Path(__file__).resolve().parent.parent / name))
    if tokenizer.config.resolution != resolution:
        raise SystemExit(
            f"tokenizer preset {name} is {tokenizer.config.resolution} px, not {resolution} px"
        )
    return tokenizer, f"{name} (random init)"


def _dataset(resolution: int, images: int):
    """The bundled demo photos (val, then train crops if more are asked for)."""
    import torch

    from glotok_bench.data.demo import DemoDataset

    parts = [
        DemoDataset(DemoDataset.Config(horizontal_flip=False), split=s, resolution=resolution)
        for s in ("val", "train")
    ]
    dataset = torch.utils.data.ConcatDataset(parts)
    if images > len(dataset):
        raise SystemExit(
            f"the demo set has {len(dataset)} images at {resolution} px; ask for fewer"
        )

    class Head(torch.utils.data.Dataset):
        def __len__(self):
            return images

        def __getitem__(self, index):
            image, label, _, error = dataset[index]
            return image, label, index, error

        def protocol(self):
            protocol = parts[0].protocol()
            return {**protocol, "split": "val+train", "count": images}

    return Head()


def measure(args: argparse.Namespace) -> dict:
    import torch

    from glotok_bench.device import pick_device
    from glotok_bench.eval.evaluator import EvalOptions, run_evaluation
    from glotok_bench.eval.fidelity import FrechetDistance, InceptionScore

    device = pick_device(args.device)
    extractor_choice = args.extractor[0]  # the parent passes exactly one
    tokenizer, tokenizer_name = _tokenizer(args.tokenizer, args.resolution)
    weights = args.inception or ""
    options = EvalOptions(
        fid=FrechetDistance.Config(
            extractor=extractor_choice, inception_weights=weights, cache=False
        ),
        inception_score=InceptionScore.Config(
            extractor=extractor_choice, inception_weights=weights
        ),
        lpips=EvalOptions().lpips if args.lpips else None,
        lpips_required=args.lpips,
        uniformity=None,
        fig4=None,
        sample_images=0,
        progress=False,
    )
    result = run_evaluation(
        tokenizer,
        _dataset(args.resolution, args.images),
        options,
        device=device,
        batch_size=args.batch_size,
    )
    info = result.info
    updates = info["metric_update_s"]
    extractor = next(v["protocol"]["extractor"] for k, v in result.metrics.items() if "fid" in k)
    return {
        "timestamp": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "device": info["device"].get("name", info["device"]["type"]),
        "torch": torch.__version__,
        "extractor": extractor,
        "tokenizer": tokenizer_name,
        "resolution": args.resolution,
        "images": info["images"],
        "batch_size": args.batch_size,
        "images_per_s": round(info["images_per_s"], 3),
        "wall_s": round(info["wall_s"], 2),
        "tokenizer_s": round(info["tokenizer_s"], 2),
        **{
            f"{name}_s": round(updates[name], 2) if name in updates else ""
            for name in ("fid", "inception_score", "psnr", "ssim", "usage", "lpips")
        },
        "peak_memory_mb": round(info["peak_memory_bytes"] / 2**20, 1),
        "peak_memory_scope": info["peak_memory_scope"],
        "threads": info["device"]["threads"],
        "load_avg_1m": round(os.getloadavg()[0], 2),
        "note": args.note,
    }




def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--extractor", nargs="+", default=["standin", "inception"], choices=["standin", "inception"]
    )
    parser.add_argument("--images", type=int, default=96)
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument(
        "--tokenizer", default="configs/cpu/glotok-64.toml",
        help="a config file (relative to the repository) whose [tokenizer] is measured, or 'pool' (no model)",
    )
    parser.add_argument("--device", default="auto")
    parser.add_argument(
        "--inception", default=None, help="path to weights-inception-2015-12-05-6726825d.pth"
    )
    parser.add_argument(
        "--lpips", action="store_true", help="include LPIPS (its weights must resolve)"
    )
    parser.add_argument(
        "--note", default="", help="said in the row, e.g. 'random-init Inception weights (timing only)'"
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:
        print(json.dumps(measure(args)))
        return

    rows = []
    for extractor in args.extractor:
        if extractor == "inception":
            from glotok_bench.errors import MissingWeightsError
            from glotok_bench.eval.extractors import resolve_inception_path

            try:
                resolve_inception_path(args.inception)
            except MissingWeightsError as exc:
                print(f"skipping inception: {exc}", file=sys.stderr)
                continue
        child_args = ["--extractor", extractor]
        for flag in ("images", "resolution", "batch_size", "tokenizer", "device", "inception", "note"):
            value = getattr(args, flag)
            if value is not None:
                child_args += [f"--{flag.replace('_', '-')}", str(value)]
        if args.lpips:
            child_args.append("--lpips")
        row = run_child(__file__, child_args, label=f"{extractor} run")
        print(json.dumps(row))
        rows.append(row)
    if rows:
        append_csv_rows(RESULTS, rows, COLUMNS)
        print(f"appended {len(rows)} row(s) to {RESULTS}")


if __name__ == "__main__":
    main()
