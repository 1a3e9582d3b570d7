"""The paper's cost claim: training step time and peak memory with global (histogram)
vs local (InfoNCE against a frozen teacher) semantic supervision, same tokenizer.

GloTok (Appendix B.2) reports >15% less training time and ~10% less GPU memory than
FQGAN-style local supervision, because no teacher runs during training. Here one
tokenizer preset is trained with ``none``, ``histogram`` and ``local-infonce``
supervision; the teacher architecture is the same for both: local-infonce runs it on
every batch, histogram uses a codebook of its embedding width prepared beforehand
(random centres: the histogram's cost does not depend on their values, and its
one-off teacher histogram is reported as ``setup_s``). Teachers are random-init
(timing only; nothing is downloaded). Each variant runs in a fresh subprocess; peak
memory is taken over its timed steps (CUDA allocator peak, or CPU peak RSS); rows go
to benchmarks/results/supervision_cost.csv (rewritten atomically).

    python benchmarks/supervision_cost.py                     # cpu-32, CLIP ViT-L/14 teacher
    python benchmarks/supervision_cost.py --preset configs/glotok.toml --batch-size 16 --device cuda
    python benchmarks/supervision_cost.py --teacher dinov2 --teacher-model vit_base_patch14_dinov2
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from glotok_bench.benchmarking import append_csv_rows, git_commit, run_child

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "benchmarks" / "results" / "supervision_cost.csv"
COLUMNS = [
    "timestamp", "supervision", "preset", "semantic_size", "resolution", "batch_size",
    "teacher", "teacher_model", "teacher_image_size", "head_width", "teacher_k", "device", "device_name", "precision", "threads",
    "steps", "step_ms", "supervision_ms", "images_per_s", "setup_s", "peak_memory_mb",
    "peak_memory_kind", "trainable_parameters", "load_avg_1m", "torch", "git_commit",
]  # fmt: skip




def _peak_rss() -> int:
    match = re.search(r"VmHWM:\s+(\d+) kB", Path("/proc/self/status").read_text())
    return int(match.group(1)) * 1024


def _supervision(args: argparse.Namespace, semantic_dim: int, grid: int, device, folder: Path):
    """The supervision under test, built as a run would build it."""
    import torch
    from safetensors.torch import save_file

    from glotok_bench.supervision.histogram import HistogramSupervision
    from glotok_bench.supervision.local_infonce import LocalInfoNCESupervision
    from glotok_bench.supervision.none import NoSupervision
    from glotok_bench.teachers.backbones import embedding_width

    teacher_options = dict(backbone=args.teacher, model=args.teacher_model, allow_random_init=True)
    if args.teacher_image_size:  # DINOv2's input size (CLIP keeps its own)
        teacher_options["image_size"] = args.teacher_image_size
    if args.supervision == "local-infonce":
        # The head is sized like the grids' (grids/cpu/evidence/local.toml) and sees this tokenizer's grid.
        head = {"hidden_dim": args.head_width} if args.head_width else {}
        config = LocalInfoNCESupervision.Config(**teacher_options, **head, grid_size=grid)
        return LocalInfoNCESupervision(config, semantic_dim=semantic_dim, device=device)
    if args.supervision == "histogram":
        # A teacher codebook of the same encoder's embedding width.
        width = embedding_width(args.teacher, args.teacher_model)
        codes = torch.randn(args.teacher_k, width, generator=torch.Generator().manual_seed(0))
        save_file({"codebook": codes}, str(folder / "teacher.safetensors"))
        config = HistogramSupervision.Config(teacher_file=str(folder / "teacher.safetensors"))
        return HistogramSupervision(config, semantic_dim=semantic_dim, device=device)
    return NoSupervision(NoSupervision.Config(), semantic_dim=semantic_dim)


def measure(args: argparse.Namespace) -> dict:
    """One variant in this process: build, warm up, time ``args.steps`` training steps."""
    import attrs
    import torch

    from glotok_bench.tokenizer import standalone_registry
    from glotok_bench.tokenizer.config import LossConfig
    from glotok_bench.tokenizer.model import load_tokenizer_config
    from glotok_bench.train.config import TrainConfig
    from glotok_bench.train.trainer import Trainer

    torch.set_num_threads(args.threads)
    device = torch.device(
        args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    )
    tokenizer = load_tokenizer_config(ROOT / args.preset)
    quantizer = tokenizer.quantizer
    if args.semantic_size:
        quantizer = attrs.evolve(
            quantizer, config=attrs.evolve(quantizer.config, semantic_size=args.semantic_size)
        )
        tokenizer = attrs.evolve(tokenizer, quantizer=quantizer)
    semantic_dim = quantizer.config.code_dim
    grid = tokenizer.resolution // 2 ** (len(tokenizer.autoencoder.config.channel_multipliers) - 1)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        supervision = _supervision(args, semantic_dim, grid, device, Path(tmp))
        setup = time.perf_counter() - start
        loss = LossConfig(perceptual=False, adversarial_weight=0.5, disc_start=0)
        train = TrainConfig(batch_size=args.batch_size, progress=False)
        trainer = Trainer(
            tokenizer,
            loss,
            train,
            device=str(device),
            registry=standalone_registry(),
            supervision=supervision,
        )
        images = (
            torch.rand(
                args.batch_size, 3, tokenizer.resolution, tokenizer.resolution, device=device
            )
            * 2
            - 1
        )

        def sync() -> None:
            if device.type == "cuda":
                torch.cuda.synchronize(device)

        for _ in range(args.warmup):
            trainer.optimisation_step(images)
        sync()
        # Peak over the timed steps only: loading a teacher (open_clip builds CLIP's text
        # tower too, then drops it) is a one-off that would otherwise dominate.
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        else:
            Path("/proc/self/clear_refs").write_text("5")  # VmHWM := current RSS
        # Median over steps: other jobs on a shared machine stretch some steps.
        step_seconds = []
        for _ in range(args.steps):
            start = time.perf_counter()
            terms = trainer.optimisation_step(images).scalars
            sync()
            step_seconds.append(time.perf_counter() - start)
        assert all(torch.isfinite(value).all() for value in terms.values())
        step = sorted(step_seconds)[len(step_seconds) // 2]
        peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else _peak_rss()

        # The supervision alone (loss + backward) on the tokenizer's real inputs.
        output = trainer.model(images)
        quantized = output.encoding.branches["semantic"].quantized.detach().float()
        supervision_seconds = []
        for _ in range(args.steps):
            start = time.perf_counter()
            codebook = trainer.model.semantic_codebook().detach().requires_grad_(True)
            value = supervision.loss(codebook, quantized, images)
            if value.requires_grad:  # "none" returns a constant
                value.backward()
            sync()
            supervision_seconds.append(time.perf_counter() - start)
        supervision_step = sorted(supervision_seconds)[len(supervision_seconds) // 2]
    return {
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
        "supervision": args.supervision,
        "preset": args.preset,
        "semantic_size": quantizer.config.semantic_size,
        "resolution": tokenizer.resolution,
        "batch_size": args.batch_size,
        "teacher": args.teacher,
        "teacher_model": args.teacher_model,
        "teacher_image_size": args.teacher_image_size or "",
        "head_width": args.head_width or "",
        "teacher_k": args.teacher_k if args.supervision == "histogram" else "",
        "device": device.type,
        "device_name": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else platform.processor() or platform.machine(),
        "precision": trainer.precision,
        "threads": torch.get_num_threads(),
        "steps": args.steps,
        "step_ms": round(1000 * step, 1),
        "supervision_ms": round(1000 * supervision_step, 1),
        "images_per_s": round(args.batch_size / step, 3),
        "setup_s": round(setup, 2),
        "peak_memory_mb": round(peak / 2**20, 1),
        "peak_memory_kind": "cuda_max_allocated" if device.type == "cuda" else "process_peak_rss",
        "trainable_parameters": sum(p.numel() for p in trainer._generator_params),
        "load_avg_1m": round(os.getloadavg()[0], 2),
        "torch": torch.__version__,
        "git_commit": git_commit(),
    }




def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--supervisions", nargs="+", default=["none", "histogram", "local-infonce"])
    parser.add_argument(
        "--preset", default="configs/cpu/glotok.toml", help="config file whose [tokenizer] table is trained"
    )
    parser.add_argument(
        "--semantic-sizes", type=int, nargs="+", default=[0], help="0: the preset's own"
    )
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--teacher", choices=["clip", "dinov2"], default="clip")
    parser.add_argument("--teacher-model", default="ViT-L-14")
    parser.add_argument("--teacher-image-size", type=int, default=0,
                        help="DINOv2 teacher input size; 0: the supervision's default")
    parser.add_argument("--head-width", type=int, default=0, help="local-infonce head width; 0: its default")
    parser.add_argument(
        "--teacher-k", type=int, default=16384, help="histogram teacher codebook size"
    )
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--device", default="auto")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="CPU threads; 1 by default: with other jobs on a 2-core machine, 2 threads "
        "wait on each other at every op and time 2-10x slower",
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--supervision", help=argparse.SUPPRESS)
    parser.add_argument("--semantic-size", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(measure(args)))
        return 0
    sys.path.insert(0, str(ROOT))
    rows = []
    for semantic_size in args.semantic_sizes:
        for supervision in args.supervisions:
            child_args = [
                "--supervision", supervision,
                "--preset", args.preset, "--semantic-size", str(semantic_size),
                "--batch-size", str(args.batch_size), "--teacher", args.teacher,
                "--teacher-model", args.teacher_model, "--teacher-k", str(args.teacher_k),
                "--teacher-image-size", str(args.teacher_image_size), "--head-width", str(args.head_width),
                "--steps", str(args.steps), "--warmup", str(args.warmup), "--device", args.device, "--threads", str(args.threads),
            ]  # fmt: skip
            row = run_child(__file__, child_args, label=supervision)
            rows.append(row)
            print(
                f"{supervision:>14} semantic={row['semantic_size']:>6}: {row['step_ms']:9.1f} ms/step "
                f"(supervision alone {row['supervision_ms']:8.1f} ms)  peak {row['peak_memory_mb']} MB  "
                f"setup {row['setup_s']} s",
                flush=True,
            )
    append_csv_rows(args.out, rows, COLUMNS)
    print(f"wrote {len(rows)} row(s) to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
