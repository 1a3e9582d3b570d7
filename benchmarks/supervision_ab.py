"""Paper App. B.2 as an A/B measurement: histogram vs local supervision, interleaved, repeated.

One measurement is one fresh process of ``supervision_cost.py`` (same tokenizer, same batch;
peak memory is the highest per-step peak over its timed steps). Arms alternate A B, B A, ...
within each repeat, so drift in the machine's load hits both arms alike, and each
(semantic codebook size, arm) gets ``--repeats`` measurements (10 or more for a result;
fewer is labelled a quick check in ``run_kind``). The local arm's teacher is sized like
grids/cpu/evidence/local.toml: DINOv2-small at 28 px, the paper's teacher-to-tokenizer
FLOP ratio at CPU scale (benchmarks/teacher_ratio.py), and a head of width 128. Rows go to
benchmarks/results/supervision_ab.csv; the summary printed at the end is the median step
time and peak memory per arm, and local / histogram ratios.

    python benchmarks/supervision_ab.py                                # 256, 4096, 16384 codes x 10 repeats (~30 min)
    python benchmarks/supervision_ab.py --sizes 256 --repeats 1 --steps 2   # quick check
"""

from __future__ import annotations

import argparse
import statistics
import sys
from datetime import UTC, datetime
from pathlib import Path

from glotok_bench.benchmarking import append_csv_rows, run_child

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "results" / "supervision_ab.csv"
ARMS = ("histogram", "local-infonce")
MIN_REPEATS = 10
COLUMNS = [
    "timestamp", "run_id", "run_kind", "repeat", "position", "supervision", "semantic_size", "preset", "resolution",
    "batch_size", "teacher", "teacher_model", "teacher_image_size", "head_width", "teacher_k", "device", "device_name",
    "precision", "threads", "steps", "step_ms", "supervision_ms", "peak_memory_mb", "peak_memory_kind",
    "load_avg_1m", "torch", "git_commit",
]  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 4096, 16384], help="semantic codebook sizes")
    parser.add_argument("--repeats", type=int, default=MIN_REPEATS)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per measurement")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--preset", default="configs/cpu/glotok.toml")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--teacher-model", default="vit_small_patch14_dinov2")
    parser.add_argument("--teacher-image-size", type=int, default=28)
    parser.add_argument("--head-width", type=int, default=128)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    kind = "result" if args.repeats >= MIN_REPEATS else f"quick check ({args.repeats} repeats, not a result)"
    run_id = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")  # pairs this run's rows in claims.csv
    rows = []
    for size in args.sizes:
        for repeat in range(args.repeats):
            order = ARMS if repeat % 2 == 0 else ARMS[::-1]
            for position, arm in enumerate(order):
                child = [
                    "--supervision", arm, "--preset", args.preset, "--semantic-size", str(size),
                    "--batch-size", str(args.batch_size), "--teacher", "dinov2",
                    "--teacher-model", args.teacher_model, "--teacher-image-size", str(args.teacher_image_size),
                    "--head-width", str(args.head_width),
                    "--teacher-k", str(size), "--steps", str(args.steps), "--warmup", str(args.warmup),
                    "--device", args.device, "--threads", str(args.threads),
                ]  # fmt: skip
                row = run_child(HERE / "supervision_cost.py", child, label=f"{arm} @ {size}")
                rows.append({**row, "run_id": run_id, "run_kind": kind, "repeat": repeat, "position": position})
                print(f"{size:>6} codes, repeat {repeat}: {arm:>13} {row['step_ms']:9.1f} ms/step, "
                      f"peak {row['peak_memory_mb']} MB", flush=True)
    append_csv_rows(args.out, rows, COLUMNS)
    print(f"wrote {len(rows)} row(s) to {args.out} ({kind})")
    for size in args.sizes:
        median = {
            arm: {key: statistics.median(float(r[key]) for r in rows if r["semantic_size"] == size and r["supervision"] == arm)
                  for key in ("step_ms", "peak_memory_mb")}
            for arm in ARMS
        }
        h, loc = median["histogram"], median["local-infonce"]
        print(f"{size:>6} codes: median step {h['step_ms']:.1f} vs {loc['step_ms']:.1f} ms "
              f"(local / histogram {loc['step_ms'] / h['step_ms']:.3f}); peak {h['peak_memory_mb']:.0f} vs "
              f"{loc['peak_memory_mb']:.0f} MB ({loc['peak_memory_mb'] / h['peak_memory_mb']:.3f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
