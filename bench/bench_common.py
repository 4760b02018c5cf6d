"""What the benchmarks (bench_dense_decode.py, bench_sparse_decode.py, bench_sparse_prefill.py)
share: the anchor-table choice and lookup, the case filters, the case loop of main(), the CUDA-event timing
with an L2 flush, the NaN check, the common command-line options, the result table and the JSON
result file. Imported by the scripts from their own directory."""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import re
import statistics
import time
from pathlib import Path
from typing import Callable, Iterable, Optional, Sequence

import torch


def anchor_table(device_name: str, anchors: dict) -> tuple[str, dict]:
    """The anchor figures of the GPU the benchmark runs on (H200, else H100)."""
    gpu = "H200" if "H200" in device_name else "H100"
    return gpu, anchors[gpu]


def anchor_figures(anchors: dict, key, anchor_flops: float) -> tuple:
    """(TFLOP/s, time in us) of the anchor row `key`, (None, None) without one. Where the table
    gives only TFLOP/s, the time is anchor_flops (the FLOPs the anchor counts) / TFLOP/s."""
    tflops, time = anchors.get(key, (None, None))
    if tflops is not None and time is None:
        time = anchor_flops / tflops / 1e6
    return tflops, time


def select_cases(cases: Iterable, args: argparse.Namespace, name: str, *fields: str) -> list:
    """The cases whose attribute `field` is among the values of the option --field (unset: any
    value), for each of `fields` ("s_k", "h_q", ...); says so when none is left."""
    selected = [
        case
        for case in cases
        if all(not getattr(args, f) or getattr(case, f) in getattr(args, f) for f in fields)
    ]
    if not selected:
        options = " / ".join("--" + f.replace("_", "-") for f in fields)
        print(f"bench_{name}: no case matches the {options} filters")
    return selected


def run_benchmark(
    name: str,
    args: argparse.Namespace,
    anchor_tables: dict,
    cases: Iterable,
    run_case: Callable,
    progress: Callable,
    print_results: Callable,
    **extra: str,
) -> int:
    """What main() does once the options are read: run_case(case, args, anchors) for each case
    with the anchor figures of this GPU, printing progress(case, result) as each one ends; then
    print_results(results, gpu) and the JSON file (`extra` entries as in write_results)."""
    device_name = torch.cuda.get_device_name()
    gpu, anchors = anchor_table(device_name, anchor_tables)
    results = []
    for case in cases:
        result = run_case(case, args, anchors)
        torch.cuda.empty_cache()  # frees this case's inputs first (decode caches are GBs)
        print(progress(case, result), flush=True)
        results.append(result)
    print_results(results, gpu)
    write_results(name, args.json, device_name, gpu, args, results, **extra)
    return 0


def checked_sequences(b: int, check_all: bool) -> list[int]:
    """The sequences compared with the reference: all with --check, else every (b // 8)-th."""
    return list(range(b)) if check_all else sorted(set(range(0, b, max(b // 8, 1))))


def assert_no_nan(label: str, *outputs: torch.Tensor) -> None:
    """Every case's outputs are looked at, even with --no-check."""
    if any(bool(torch.isnan(t).any()) for t in outputs):
        raise AssertionError(f"NaN in the output of case {label}")


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


def _call_spans(fn, reps: int, separate: Callable[[], None]) -> list[float]:
    """Kernel spans (us) of `reps` profiled calls of fn(), each after separate(), which launches
    one kernel of its own (fn() never launches it) that marks where a call begins: from the
    start of the call's first kernel to the end of its last, as the CUDA profiler (CUPTI,
    through torch.profiler) records them."""
    torch.cuda.synchronize()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as marker:
        separate()
        torch.cuda.synchronize()
    names = {e.name for e in marker.events() if e.device_type == torch.autograd.DeviceType.CUDA}
    if len(names) != 1:
        raise RuntimeError(f"_call_spans: the separator launched {sorted(names)}, not one kernel")
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        for _ in range(reps):
            separate()
            fn()
        torch.cuda.synchronize()
    kernels = sorted(
        (e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA),
        key=lambda e: e.time_range.start,
    )
    spans, current = [], []
    for event in kernels + [None]:
        if event is None or event.name in names:
            if current:
                spans.append(max(e.time_range.end for e in current) - current[0].time_range.start)
            current = []
        else:
            current.append(event)
    if len(spans) != reps:
        raise RuntimeError(f"_call_spans: found {len(spans)} calls in the profile, not {reps}")
    return spans


def kernel_span_us(fn, warmup: int, reps: int) -> float:
    """Median of `reps` kernel spans of fn(), in microseconds (first kernel start to last kernel
    end, CUPTI), with the same 256 MB L2 flush before each call as time_us. FlashMLA's tests
    time a decode call this way (kineto, "split-KV start to combine end"): the gaps between the
    call's kernels count, the time from the event before the call to its first kernel does not
    (time_us counts it, the stricter measure)."""
    flush = torch.empty(256 * 1024 * 1024, dtype=torch.uint8, device="cuda")
    for _ in range(warmup):
        fn()
    return statistics.median(_call_spans(fn, reps, flush.bitwise_not_))


def recipe_span_us(fn, calls: int = 10) -> float:
    """Mean kernel span of fn() (us) under the recipe of FlashMLA's own tests, which produced
    the anchor figures (its kernelkit.bench_kineto, as its test scripts call it): a 0.3 s
    cool-down before the case, then `calls` calls and `calls` profiled calls, each after an
    8 GB memset. The memsets flush the L2 and leave the tensor cores idle about half of the
    time, so the clocks sit higher under the power cap than in time_us's back-to-back calls:
    FlashMLA's own kernels reach their anchors this way and 2-9% less in time_us (docs/
    perf-notes.md). The headline stays time_us; this is the like-for-like figure."""
    # 8 GB, as theirs; less where the case's inputs leave less than twice that free.
    free_bytes, _ = torch.cuda.mem_get_info()
    memset = torch.empty(min(8_000_000_000, free_bytes // 2) // 4, dtype=torch.int32, device="cuda")
    time.sleep(0.3)
    for _ in range(calls):
        memset.zero_()
        fn()
    spans = _call_spans(fn, calls, memset.zero_)
    del memset
    return statistics.mean(spans)


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


def or_dash(value: Optional[float], spec: str) -> str:
    """`value` formatted with `spec`, or "-" where there is none (no anchor row)."""
    return format(value, spec) if value else "-"


def print_table(title: str, columns: Sequence[tuple], rows: Iterable[Sequence]) -> None:
    """The table after the runs: `title`, the header, a rule and a line per row. A column is
    (name, width, format spec of its values: ".1f", or "" for text and integers); values and
    names are right-aligned to the width."""
    print(f"\n{title}")
    header = " ".join(f"{name:>{width}}" for name, width, _ in columns)
    print(header)
    print("-" * len(header))
    for row in rows:
        cells = (format(value, f">{width}{spec}") for value, (_, width, spec) in zip(row, columns))
        print(" ".join(cells))


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
