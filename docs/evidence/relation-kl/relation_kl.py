"""How close each evidence cell's semantic codebook ends to the teacher's relations.

GloTok's histogram loss is KL(teacher || student) over the histograms of pairwise code
similarities. A cell trained with it logs that KL for its own codebook, but the lambda 0
cells (no supervision) never compute it, so "histogram supervision moves the relations
towards the teacher" has no control arm in the records. This script computes the same KL
(40 bins, as the cells' supervision) for every cell's final checkpoint against one teacher
file, so all arms are measured alike, and writes one CSV row per cell beside itself, then
prints each arm's mean and Welch's 95% interval of its difference to the lambda 0 arm.

    python docs/evidence/relation-kl/relation_kl.py runs/evidence/cpu-evidence-histogram \
        --teacher ~/.cache/glotok_bench/teachers/patch-kmeans-1d263c7d3f779fba.safetensors

The teacher must be the codebook the supervised cells trained against: its fingerprint is
checked against every record that names one.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
COLUMNS = ["grid", "cell", "lambda_hist", "seed", "step", "weights", "checkpoint_sha256", "teacher_file",
           "teacher_codebook_sha256", "bins", "kl_teacher_student"]  # fmt: skip
BINS = 40


def final_checkpoint(cell: Path) -> Path:
    checkpoints = sorted((cell / "tokenizer" / "checkpoints").glob("ckpt-*.pt"))
    if not checkpoints:
        raise SystemExit(f"{cell}: no tokenizer checkpoint (rerun the grid to get one)")
    return checkpoints[-1]


def recorded_teacher_sha(record: dict) -> str | None:
    """The teacher sha256 a supervised cell's training summary names, or None."""
    found = []

    def walk(node: object) -> None:
        if isinstance(node, dict):
            if "teacher_sha256" in node:
                found.append(node["teacher_sha256"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(record.get("results", {}))
    return found[0] if found else None


def main(argv: list[str] | None = None) -> int:
    import torch

    from glotok_bench.atomic import atomic_write_bytes
    from glotok_bench.histogram.api import histogram_relation_loss, relation_histogram
    from glotok_bench.leaderboard.build import csv_bytes
    from glotok_bench.leaderboard.claims import welch_difference
    from glotok_bench.teachers.peer_files import read_tensor
    from glotok_bench.tokenizer.checkpoint import load_tokenizer
    from glotok_bench.weights import file_sha256

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("grid_runs", type=Path, help="a grid's folder under --runs (cells with record.json)")
    parser.add_argument("--teacher", type=Path, required=True)
    parser.add_argument("--weights", choices=["ema", "model"], default="ema",
                        help="ema: what the cells' evaluation used (the CPU presets keep EMA)")
    parser.add_argument("--out", type=Path, default=HERE / "relation_kl.csv")
    args = parser.parse_args(argv)

    teacher = read_tensor(args.teacher.expanduser(), "codebook").float().contiguous()
    # The supervision's own fingerprint: sha256 of the codebook's float32 bytes, not the file's.
    teacher_sha = hashlib.sha256(teacher.numpy().tobytes()).hexdigest()
    with torch.no_grad():
        teacher_hist = relation_histogram(teacher, bins=BINS)
    rows = []
    for record_file in sorted(args.grid_runs.glob("*/record.json")):
        cell = record_file.parent
        record = json.loads(record_file.read_text())
        if record.get("status") != "ok":
            continue
        named = recorded_teacher_sha(record)
        if named is not None and named != teacher_sha:
            raise SystemExit(f"{cell.name} trained against teacher {named[:12]}, not {args.teacher}")
        checkpoint = final_checkpoint(cell)
        tokenizer, payload = load_tokenizer(checkpoint, weights=args.weights)
        with torch.no_grad():
            kl = float(histogram_relation_loss(tokenizer.semantic_codebook().float(), teacher_hist))
        labels = record["labels"]
        rows.append({
            "grid": labels["grid"], "cell": cell.name, "lambda_hist": labels["lambda_hist"], "seed": labels["seed"],
            "step": payload.get("step"), "weights": args.weights, "checkpoint_sha256": file_sha256(checkpoint),
            "teacher_file": args.teacher.name, "teacher_codebook_sha256": teacher_sha, "bins": BINS, "kl_teacher_student": kl,
        })  # fmt: skip
    if not rows:
        raise SystemExit(f"no finished cells under {args.grid_runs}")
    import pandas as pd

    frame = pd.DataFrame(rows, columns=COLUMNS).sort_values(["lambda_hist", "seed"])
    atomic_write_bytes(args.out, csv_bytes(frame))
    by_arm: dict[float, list[float]] = defaultdict(list)
    for row in rows:
        by_arm[float(row["lambda_hist"])].append(row["kl_teacher_student"])
    control = by_arm.get(0.0)
    for arm, values in sorted(by_arm.items()):
        line = f"lambda_hist {arm:g}: KL {sum(values) / len(values):.4f} (n={len(values)})"
        if control and arm != 0.0:
            _, _, diff, low, high = welch_difference(values, control)
            line += f", minus lambda 0: {diff:+.4f} [{low:+.4f}, {high:+.4f}] (Welch 95%)"
        print(line)
    print(f"wrote {len(rows)} row(s) to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
