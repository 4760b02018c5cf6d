"""What the decode benchmarks (bench_dense_decode.py, bench_sparse_decode.py) share: the
anchor-table choice, the CUDA-event timing with an L2 flush, the common command-line options
and the JSON result file. Imported by the scripts from their own directory."""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import re
import statistics
from pathlib import Path
from typing import Optional

import torch


def anchor_table(device_name: str, anchors: dict) -> tuple[str, dict]:
    """The anchor figures of the GPU the benchmark runs on (H200, else H100)."""
    gpu = "H200" if "H200" in device_name else "H100"
    return gpu, anchors[gpu]


def time_us(fn, warmup: int, reps: int) -> float:
    """Median of `reps` CUDA-event timings of fn() after `warmup` calls, in microseconds. A 256 MB
    buffer is cleared before each timed call: it flushes the L2 and keeps the GPU busy while
    Python enqueues the call (so launch overhead is not timed)."""
    flush = torch.empty(256 * 1024 * 1024, dtype=torch.uint8, device="cuda")
    for _ in range(warmup):
        fn()
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
    for start, end in zip(starts, ends):
        flush.zero_()
        start.record()
        fn()
        end.record()
    torch.cuda.synchronize()
    return statistics.median(s.elapsed_time(e) for s, e in zip(starts, ends)) * 1e3


def add_common_arguments(parser: argparse.ArgumentParser, name: str) -> None:
    """--warmup, --reps, --check, --no-check and --json (default: results/<name>_<device>.json);
    added after the benchmark's own options, so that --help keeps its order."""
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--reps", type=int, default=50)
    parser.add_argument("--check", action="store_true", help="check all sequences vs reference")
    parser.add_argument("--no-check", action="store_true", help="only check for NaN")
    parser.add_argument(
        "--json",
        type=Path,
        default=None,
        help=f"output path (default: bench/results/{name}_<device>.json)",
    )


def write_results(
    name: str,
    path: Optional[Path],
    device_name: str,
    gpu: str,
    args: argparse.Namespace,
    results: list,
    **extra: str,
) -> Path:
    """Writes the results (dataclasses) with the run's context to `path` (default:
    results/<name>_<device>.json next to the scripts); `extra` entries go before the results."""
    path = path or Path(__file__).resolve().parent / "results" / (
        name + "_" + re.sub(r"[^A-Za-z0-9]+", "_", device_name).strip("_") + ".json"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        json.dumps(
            {
                "device": device_name,
                "anchor_table": gpu,
                "torch": torch.__version__,
                "cuda": torch.version.cuda,
                "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                "timing": f"whole operation, median of {args.reps} after {args.warmup} warm-ups",
                **extra,
                "results": [dataclasses.asdict(r) for r in results],
            },
            indent=2,
        )
        + "\n"
    )
    print(f"\nwrote {path}")
    return path
