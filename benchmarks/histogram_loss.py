"""Time and peak memory of the histogram relation loss, forward + backward, per method and n.

Each (method, n) runs in a fresh subprocess so its peak memory (CUDA allocator peak,
or the process's peak RSS above what it held before the run on CPU) is its own, and
appends a row to benchmarks/results/histogram_loss.csv (rewritten atomically). The
direct reference is skipped, with a row saying so, where its estimated memory exceeds
what the device has free.

    python benchmarks/histogram_loss.py                                  # 1024, 4096, 16384
    python benchmarks/histogram_loss.py --sizes 4096 --methods streaming --device cuda
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from glotok_bench.benchmarking import append_csv_rows, git_commit, run_child

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "benchmarks" / "results" / "histogram_loss.csv"
COLUMNS = [
    "timestamp", "device", "device_name", "torch", "threads", "method", "n", "code_dim",
    "bins", "repeats", "seconds", "forward_s", "backward_s", "peak_memory_mb",
    "peak_memory_kind", "loss", "load_avg_1m", "status", "git_commit",
]  # fmt: skip
# Bytes per pair the direct form holds at its peak (kernel values, their autograd copies
# and the gathered similarities): measured 6.5 GB at n = 4096 on this CPU.
DIRECT_BYTES_PER_PAIR = 800




def _rss_bytes(field: str) -> int:
    match = re.search(rf"{field}:\s+(\d+) kB", Path("/proc/self/status").read_text())
    return int(match.group(1)) * 1024 if match else 0


def _available_bytes(device) -> int:
    import torch

    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    match = re.search(r"MemAvailable:\s+(\d+) kB", Path("/proc/meminfo").read_text())
    return int(match.group(1)) * 1024 if match else 0


def measure(args: argparse.Namespace) -> dict:
    """One (method, n) in this process: warm up on a small codebook, then time."""
    import torch

    import glotok_bench

    torch.set_num_threads(args.threads)
    device = torch.device(
        args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    )
    row = {
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
        "device": device.type,
        "device_name": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "method": args.method,
        "n": args.n,
        "code_dim": args.code_dim,
        "bins": args.bins,
        "repeats": args.repeats,
        "load_avg_1m": round(os.getloadavg()[0], 2),  # other processes on this machine
        "git_commit": git_commit(),
    }
    pairs = args.n * (args.n + 1) // 2
    if args.method == "direct" and pairs * DIRECT_BYTES_PER_PAIR > _available_bytes(device):
        need = pairs * DIRECT_BYTES_PER_PAIR / 2**30
        return {
            **row,
            "status": f"skipped: needs ~{need:.0f} GiB, {_available_bytes(device) / 2**30:.0f} GiB free",
        }

    generator = torch.Generator().manual_seed(0)
    teacher = glotok_bench.relation_histogram(
        torch.randn(512, args.code_dim, generator=generator), bins=args.bins
    )
    teacher = teacher.to(device)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    def run(n: int) -> tuple[float, float, float]:
        codes = torch.randn(n, args.code_dim, generator=generator).to(device).requires_grad_(True)
        sync()
        start = time.perf_counter()
        loss = glotok_bench.histogram_relation_loss(codes, teacher, method=args.method)
        sync()
        middle = time.perf_counter()
        loss.backward()
        sync()
        return middle - start, time.perf_counter() - middle, loss.item()

    run(256)  # first-call costs (allocator, kernel caches) stay out of the timing
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    else:
        Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    baseline = _rss_bytes("VmRSS")
    forward, backward, loss = zip(*(run(args.n) for _ in range(args.repeats)), strict=True)
    if device.type == "cuda":
        peak, kind = torch.cuda.max_memory_allocated(device), "cuda_max_allocated"
    else:
        peak, kind = _rss_bytes("VmHWM") - baseline, "cpu_peak_rss_above_baseline"
    total = sorted(f + b for f, b in zip(forward, backward, strict=True))
    middle = len(total) // 2
    return {
        **row,
        "seconds": round(total[middle], 4),
        "forward_s": round(sorted(forward)[middle], 4),
        "backward_s": round(sorted(backward)[middle], 4),
        "peak_memory_mb": round(peak / 2**20, 1),
        "peak_memory_kind": kind,
        "loss": round(loss[-1], 6),
        "status": "ok",
    }




def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[1024, 4096, 16384])
    parser.add_argument("--methods", nargs="+", default=["direct", "streaming", "sampled"])
    parser.add_argument("--code-dim", type=int, default=8)
    parser.add_argument("--bins", type=int, default=40)
    parser.add_argument(
        "--repeats", type=int, default=3, help="timed runs per row (median); 1 above n=4096"
    )
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
    parser.add_argument("--method", help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(measure(args)))
        return 0
    sys.path.insert(0, str(ROOT))
    rows = []
    for n in args.sizes:
        for method in args.methods:
            repeats = args.repeats if n <= 4096 else 1
            child_args = [
                "--method", method, "--n", str(n),
                "--code-dim", str(args.code_dim), "--bins", str(args.bins),
                "--repeats", str(repeats), "--device", args.device, "--threads", str(args.threads),
            ]  # fmt: skip
            row = run_child(__file__, child_args, label=f"{method} n={n}")
            rows.append(row)
            print(
                f"{method:>9} n={n:>6}: {row.get('seconds', '-')!s:>8} s  "
                f"(fwd {row.get('forward_s', '-')}, bwd {row.get('backward_s', '-')})  "
                f"peak {row.get('peak_memory_mb', '-')} MB  {row['status']}",
                flush=True,
            )
    append_csv_rows(args.out, rows, COLUMNS)
    print(f"wrote {len(rows)} row(s) to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
