"""Training throughput (images/s) and peak memory per tokenizer preset (a config file's
``[tokenizer]`` table) on this device.

Each (preset, setting) runs in a fresh subprocess, so the CPU peak (process max RSS) is
that run's own, and appends one row to benchmarks/results/train_throughput.csv (the
file is rewritten atomically). Data are random images already on the device: this
measures the training step, not the input pipeline. images_per_s and step_ms come from
the median step time; images_per_s_mean and the 1-minute load average (other
processes on the same cores) are kept so contended rows can be recognised.

    python benchmarks/train_throughput.py                      # cpu-32 and cpu-64
    python benchmarks/train_throughput.py --presets configs/cpu/glotok.toml --threads 1 2 --channels-last 0 1
    python benchmarks/train_throughput.py --presets configs/glotok.toml --batch-size 16 --device cuda

The full objective is timed by default: LPIPS (random-init VGG16 and linear layers
written to a temp folder; same cost as the real ones), PatchGAN from step 0, EMA.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from glotok_bench.benchmarking import append_csv_rows, git_commit, run_child

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "benchmarks" / "results" / "train_throughput.csv"
COLUMNS = [
    "timestamp",
    "preset",
    "resolution",
    "parameters",
    "device",
    "device_name",
    "precision",
    "threads",
    "batch_size",
    "channels_last",
    "compile",
    "perceptual",
    "gan",
    "steps",
    "images_per_s",
    "step_ms",
    "images_per_s_mean",
    "load_average",
    "peak_memory_mb",
    "peak_memory_kind",
    "torch",
    "git_commit",
]




def measure(args: argparse.Namespace) -> dict:
    """One run in this process: warm up, then time ``args.steps`` training steps."""
    import torch

    from glotok_bench.device import describe_device, peak_memory_bytes
    from glotok_bench.tokenizer import standalone_registry
    from glotok_bench.tokenizer.config import DiscriminatorConfig, LossConfig
    from glotok_bench.tokenizer.model import load_tokenizer_config
    from glotok_bench.tokenizer.perceptual import write_random_lpips_weights
    from glotok_bench.train.config import TrainConfig
    from glotok_bench.train.trainer import Trainer

    torch.set_num_threads(args.threads)
    device = torch.device(
        args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    )
    tok = load_tokenizer_config(ROOT / args.preset)
    with tempfile.TemporaryDirectory() as tmp:
        loss_kwargs = dict(perceptual=False)
        if args.perceptual:
            vgg, lin = write_random_lpips_weights(Path(tmp))
            loss_kwargs = dict(perceptual=True, vgg_weights=str(vgg), lpips_weights=str(lin))
        layers = 3 if tok.resolution >= 32 else 2
        loss = LossConfig(
            **loss_kwargs,
            adversarial_weight=0.5 if args.gan else 0.0,
            disc_start=0,
            discriminator=DiscriminatorConfig(num_layers=layers),
        )
        train = TrainConfig(
            batch_size=args.batch_size,
            channels_last=bool(args.channels_last),
            compile=bool(args.compile),
            progress=False,
        )
        trainer = Trainer(tok, loss, train, device=str(device), registry=standalone_registry())
        images = (
            torch.rand(args.batch_size, 3, tok.resolution, tok.resolution, device=device) * 2 - 1
        )

        def sync() -> None:
            if device.type == "cuda":
                torch.cuda.synchronize(device)

        for _ in range(args.warmup):
            trainer.optimisation_step(images)
        sync()
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        # Per-step times and their median: on shared cores a few steps stall when another
        # process takes the CPU, and the median is what the step costs when it does not.
        load_before = os.getloadavg()[0]
        times = []
        for _ in range(args.steps):
            start = time.perf_counter()
            terms = trainer.optimisation_step(images).scalars
            sync()
            times.append(time.perf_counter() - start)
        elapsed = sum(times)
        median = statistics.median(times)
        assert torch.isfinite(terms["total"]).item()
    info = describe_device(device)
    return {
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
        "preset": args.preset,
        "resolution": tok.resolution,
        "parameters": sum(p.numel() for p in trainer.model.parameters()),
        "device": device.type,
        "device_name": info.get("name", platform.processor() or platform.machine()),
        "precision": trainer.precision,
        "threads": torch.get_num_threads(),
        "batch_size": args.batch_size,
        "channels_last": int(bool(args.channels_last)),
        "compile": int(bool(args.compile)),
        "perceptual": int(bool(args.perceptual)),
        "gan": int(bool(args.gan)),
        "steps": args.steps,
        "images_per_s": round(args.batch_size / median, 3),
        "step_ms": round(1000 * median, 2),
        "images_per_s_mean": round(args.steps * args.batch_size / elapsed, 3),
        "load_average": round(max(load_before, os.getloadavg()[0]), 2),
        "peak_memory_mb": round(peak_memory_bytes(device) / 2**20, 1),
        "peak_memory_kind": "cuda_max_allocated" if device.type == "cuda" else "process_max_rss",
        "torch": torch.__version__,
        "git_commit": git_commit(),
    }




def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--presets", nargs="+", default=["configs/cpu/glotok.toml", "configs/cpu/glotok-64.toml"],
        help="config files (relative to the repository) whose [tokenizer] table is measured",
    )
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, nargs="+", default=[os.cpu_count() or 1])
    parser.add_argument("--channels-last", type=int, nargs="+", default=[1])
    parser.add_argument("--compile", type=int, nargs="+", default=[0])
    parser.add_argument(
        "--perceptual", type=int, default=1, help="1: LPIPS with random-init weights; 0: off"
    )
    parser.add_argument("--gan", type=int, default=1)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--preset", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:  # one measurement; print it as JSON for the parent
        args.threads, args.channels_last, args.compile = (
            args.threads[0],
            args.channels_last[0],
            args.compile[0],
        )
        print(json.dumps(measure(args)))
        return 0
    rows = []
    for preset, threads, channels_last, compiled in itertools.product(
        args.presets, args.threads, args.channels_last, args.compile
    ):
        child_args = [
            "--preset", preset, "--batch-size", str(args.batch_size),
            "--steps", str(args.steps), "--warmup", str(args.warmup), "--device", args.device,
            "--threads", str(threads), "--channels-last", str(channels_last), "--compile", str(compiled),
            "--perceptual", str(args.perceptual), "--gan", str(args.gan),
        ]  # fmt: skip
        row = run_child(__file__, child_args, label=preset)
        rows.append(row)
        print(
            f"{preset:>12} threads={threads} channels_last={channels_last} compile={compiled}: "
            f"{row['images_per_s']:8.2f} img/s (median step {row['step_ms']:.1f} ms; mean "
            f"{row['images_per_s_mean']:.2f} img/s)  peak {row['peak_memory_mb']} MB  load {row['load_average']}",
            flush=True,
        )
    append_csv_rows(args.out, rows, COLUMNS)
    print(f"wrote {len(rows)} row(s) to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
