"""Generator throughput: training (grid tokens/s) and sampling (images/s, with and
without KV cache) for each generator preset that fits the device.

Each measurement runs in a fresh subprocess, so the CPU peak (process max RSS) is that
run's own, and adds one row to benchmarks/results/generator_throughput.csv (rewritten
atomically). Inputs are random tokens/features already on the device: this times the
model, not the data pipeline, and sampling stops at tokens/latents (no tokenizer decode).

    python benchmarks/generator_throughput.py                        # tiny presets on CPU
    python benchmarks/generator_throughput.py --presets far-b xar-b --device cuda --batch-size 64
    python benchmarks/generator_throughput.py --presets all --modes train

Token context: the paper presets see GloTok's data (16x16 grid, 4096 semantic + 12288
visual codes, 16 channels, 1000 classes; the AR baseline one 16384-code book); the tiny
presets the demo tokenizer's (8x8 grid, 256 + 768 codes, 16 channels, 14 classes).
A preset whose estimated memory (AdamW state for training) exceeds what the device has
free is skipped. Threads default to 1: on small shared CPUs more threads oversubscribe
the cores and tiny models run many times slower.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from glotok_bench.benchmarking import append_csv_rows, git_commit, run_child

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "benchmarks" / "results" / "generator_throughput.csv"
TINY = ["far-tiny", "xar-tiny", "ar-tiny"]
PAPER_CONTEXT = {"grid_size": 16, "channels": 16, "num_classes": 1000,
                 "codebook_sizes": {"semantic": 4096, "visual": 12288}}  # fmt: skip
TINY_CONTEXT = {
    "grid_size": 8,
    "channels": 16,
    "num_classes": 14,
    "codebook_sizes": {"semantic": 256, "visual": 768},
}
COLUMNS = [
    "timestamp", "preset", "mode", "kv_cache", "parameters", "device", "device_name", "precision",
    "threads", "batch_size", "grid", "cfg_scale", "repeats", "tokens_per_s", "images_per_s", "ms_per_call",
    "peak_memory_mb", "peak_memory_kind", "torch", "git_commit",
]  # fmt: skip




def context_for(preset: str) -> dict:
    context = dict(TINY_CONTEXT if preset.endswith("-tiny") else PAPER_CONTEXT)
    if preset.startswith("ar-"):
        size = sum(context["codebook_sizes"].values())
        context["codebook_sizes"] = {"codes": size}
    return context


def build(preset: str, device=None):
    import torch

    from glotok_bench.generators.presets import PRESETS

    cls = PRESETS[preset].cls
    with torch.device(device or "meta"):
        return cls(cls.Config(), **context_for(preset))


def fits(preset: str, mode: str, batch_size: int, device: str) -> tuple[bool, str]:
    """Rough check: parameters x (16 B with AdamW, 4 B to sample) x 1.5, plus activations
    for training, against the device's free memory."""
    import torch

    params = sum(p.numel() for p in build(preset).parameters())
    context = context_for(preset)
    tokens = batch_size * context["grid_size"] ** 2
    need = params * (16 if mode == "train" else 4) * 1.5
    if mode == "train":
        width = build(preset).config.dim
        need += (
            tokens * width * 4 * 40
        )  # ~40 saved activations of width D per token and layer group
    if device.startswith("cuda"):
        free = torch.cuda.mem_get_info()[0]
    else:
        free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    return need < free, f"needs ~{need / 2**30:.1f} GiB, {free / 2**30:.1f} GiB free"


def random_batch(model, preset: str, batch_size: int, device):
    """Random labels and whatever the model trains on (index grids or features)."""
    import torch

    h, w = model.grid
    sizes = context_for(preset)["codebook_sizes"]
    batch = {"labels": torch.randint(0, model.num_classes, (batch_size,), device=device)}
    for key in model.data_keys:
        if key.startswith("indices."):
            batch[key] = torch.randint(
                0, sizes[key.split(".", 1)[1]], (batch_size, h, w), device=device
            )
        else:
            batch[key] = torch.randn(batch_size, model.channels, h, w, device=device)
    return batch


def measure(args: argparse.Namespace) -> dict:
    """One measurement in this process: warm up, then time ``args.repeats`` calls."""
    import torch

    from glotok_bench.device import (
        autocast,
        describe_device,
        peak_memory_bytes,
        pick_device,
        resolve_precision,
    )
    from glotok_bench.generators.train import GeneratorTrainConfig, make_optimizer

    torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    precision = resolve_precision("auto", device)
    torch.manual_seed(0)
    model = build(args.preset, device)
    batch = random_batch(model, args.preset, args.batch_size, device)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    if args.mode == "train":
        optimizer = make_optimizer(model, GeneratorTrainConfig())
        model.train()

        def call() -> None:
            with autocast(device, precision):
                loss = model(batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
    else:
        model.eval()

        def call() -> None:
            with autocast(device, precision):
                model.sample(
                    batch["labels"], cfg_scale=args.cfg_scale, seed=0, kv_cache=bool(args.kv_cache)
                )

    for _ in range(args.warmup):
        call()
    sync()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    for _ in range(args.repeats):
        call()
    sync()
    elapsed = time.perf_counter() - start
    info = describe_device(device)
    images = args.repeats * args.batch_size
    grid = model.grid[0] * model.grid[1]
    return {
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
        "preset": args.preset,
        "mode": args.mode,
        "kv_cache": "" if args.mode == "train" else int(bool(args.kv_cache)),
        "parameters": sum(p.numel() for p in model.parameters()),
        "device": device.type,
        "device_name": info.get("name", platform.processor() or platform.machine()),
        "precision": precision,
        "threads": torch.get_num_threads(),
        "batch_size": args.batch_size,
        "grid": f"{model.grid[0]}x{model.grid[1]}",
        "cfg_scale": "" if args.mode == "train" else args.cfg_scale,
        "repeats": args.repeats,
        "tokens_per_s": round(images * grid / elapsed, 1),
        "images_per_s": round(images / elapsed, 3),
        "ms_per_call": round(1000 * elapsed / args.repeats, 2),
        "peak_memory_mb": round(peak_memory_bytes(device) / 2**20, 1),
        "peak_memory_kind": "cuda_max_allocated" if device.type == "cuda" else "process_max_rss",
        "torch": torch.__version__,
        "git_commit": git_commit(),
    }




def main(argv: list[str] | None = None) -> int:
    sys.path.insert(0, str(ROOT))
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--presets", nargs="+", default=TINY, help="preset names, or 'all'")
    parser.add_argument(
        "--modes", nargs="+", default=["train", "sample"], choices=["train", "sample"]
    )
    parser.add_argument(
        "--kv-cache",
        type=int,
        nargs="+",
        default=[1, 0],
        help="sampling with (1) / without (0) cache",
    )
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument(
        "--repeats", type=int, default=5, help="timed calls (train steps or sample calls)"
    )
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument(
        "--cfg-scale", type=float, default=2.0, help="guidance doubles the sampling batch"
    )
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--preset", help=argparse.SUPPRESS)
    parser.add_argument("--mode", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:  # one measurement; print it as JSON for the parent
        args.kv_cache = args.kv_cache[0]
        print(json.dumps(measure(args)))
        return 0
    from glotok_bench.device import pick_device
    from glotok_bench.generators.presets import PRESETS

    presets = list(PRESETS) if args.presets == ["all"] else args.presets
    device = str(pick_device(args.device))
    rows = []
    for preset, mode in itertools.product(presets, args.modes):
        ok, why = fits(preset, mode, args.batch_size, device)
        if not ok:
            print(f"{preset:>9} {mode}: skipped, does not fit ({why})", flush=True)
            continue
        for kv_cache in [1] if mode == "train" else args.kv_cache:
            child_args = [
                "--preset", preset, "--mode", mode,
                "--kv-cache", str(kv_cache), "--batch-size", str(args.batch_size), "--repeats", str(args.repeats),
                "--warmup", str(args.warmup), "--cfg-scale", str(args.cfg_scale), "--device", args.device,
                "--threads", str(args.threads),
            ]  # fmt: skip
            row = run_child(__file__, child_args, label=f"{preset} {mode}")
            rows.append(row)
            cache = "" if mode == "train" else f" kv_cache={kv_cache}"
            print(
                f"{preset:>9} {mode:>6}{cache}: {row['tokens_per_s']:10.1f} tokens/s {row['images_per_s']:9.3f} img/s "
                f"{row['ms_per_call']:9.1f} ms/call  peak {row['peak_memory_mb']} MB",
                flush=True,
            )
    append_csv_rows(args.out, rows, COLUMNS)
    print(f"wrote {len(rows)} row(s) to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
