"""How big a local-supervision teacher is fair at CPU scale: the paper's teacher-to-tokenizer
compute ratio, applied to the CPU tokenizer.

FQGAN's local supervision runs a frozen CLIP ViT-L/14 (224 px) on every training batch
next to a VQGAN tokenizer at 256 px. Pitting that ViT-L against the 32 px CPU tokenizer
makes the cost comparison one-sided by construction. This script counts forward FLOPs per
image (``torch.utils.flop_counter``; random init, nothing downloaded) of

- the paper's pair: ``configs/glotok.toml``'s tokenizer at 256 px and CLIP ViT-L/14 at 224 px,
- the CPU tokenizer (``configs/cpu/glotok.toml``, 32 px) and DINOv2-small teachers at a few
  input sizes (multiples of its 14 px patch),

and writes one row per network to benchmarks/results/teacher_ratio.csv with its ratio to
its tokenizer. Pick the CPU teacher whose ratio is closest to the paper's.

    python benchmarks/teacher_ratio.py          # about a minute on one core
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from pathlib import Path

from glotok_bench.benchmarking import append_csv_rows, git_commit, run_child

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "benchmarks" / "results" / "teacher_ratio.csv"
COLUMNS = ["timestamp", "role", "network", "input_px", "params_m", "forward_gflops", "ratio_to_tokenizer",
           "tokenizer", "git_commit"]
PAPER_TOKENIZER = "configs/glotok.toml"
CPU_TOKENIZER = "configs/cpu/glotok.toml"
CPU_TEACHER_SIZES = (28, 42, 56)


def _forward_flops(module, images) -> float:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    # nn.MultiheadAttention's fused inference kernel (open_clip's ViT) is invisible to the
    # counter: without this, ViT-L/14 counts ~100 instead of ~160 GFLOP.
    torch.backends.mha.set_fastpath_enabled(False)
    with torch.inference_mode(), counter:
        module(images)
    return counter.get_total_flops() / len(images)


def measure(kind: str, name: str, size: int) -> dict:
    import torch

    from glotok_bench.teachers.backbones import load_backbone
    from glotok_bench.tokenizer.model import build_tokenizer, load_tokenizer_config

    torch.set_num_threads(1)
    torch.manual_seed(0)
    images = torch.rand(1, 3, size, size) * 2 - 1
    if kind == "tokenizer":
        network = build_tokenizer(load_tokenizer_config(ROOT / name)).eval()
        flops = _forward_flops(lambda x: network(x).reconstruction, images)
    else:
        backbone = load_backbone(kind, name, "", image_size=size, allow_random_init=True)
        network = backbone
        flops = _forward_flops(backbone.global_embedding, images)
    return {"network": name, "input_px": size, "params_m": round(sum(p.numel() for p in network.parameters()) / 1e6, 2),
            "forward_gflops": round(flops / 1e9, 4)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--child", nargs=3, metavar=("KIND", "NAME", "SIZE"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        kind, name, size = args.child
        print(json.dumps(measure(kind, name, int(size))))
        return 0
    jobs = [("paper", "tokenizer", PAPER_TOKENIZER, 256), ("paper", "clip", "ViT-L-14", 224),
            ("cpu", "tokenizer", CPU_TOKENIZER, 32)]
    jobs += [("cpu", "dinov2", "vit_small_patch14_dinov2", size) for size in CPU_TEACHER_SIZES]
    measured = {}
    for scale, kind, name, size in jobs:
        measured[(scale, kind, name, size)] = run_child(__file__, [kind, name, str(size)], label=f"{name}@{size}")
    stamp, commit = datetime.now(UTC).isoformat(timespec="seconds"), git_commit()
    rows = []
    for (scale, kind, name, size), row in measured.items():
        tokenizer = PAPER_TOKENIZER if scale == "paper" else CPU_TOKENIZER
        base = next(r for (s, k, _, _), r in measured.items() if s == scale and k == "tokenizer")
        rows.append({**row, "timestamp": stamp, "role": f"{scale} {'tokenizer' if kind == 'tokenizer' else 'teacher'}",
                     "ratio_to_tokenizer": round(row["forward_gflops"] / base["forward_gflops"], 3),
                     "tokenizer": tokenizer, "git_commit": commit})
        print(f"{rows[-1]['role']:>15} {name}@{size}px: {row['params_m']} M params, "
              f"{row['forward_gflops']} GFLOP/image, ratio {rows[-1]['ratio_to_tokenizer']}", flush=True)
    append_csv_rows(args.out, rows, COLUMNS)
    print(f"wrote {len(rows)} row(s) to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
