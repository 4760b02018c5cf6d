#!/usr/bin/env python3
"""Sparse MLA decode benchmark: the sparse table of ../shared/anchors.md, measured the same way.

Cases (s_q 2, h_kv 1, FP8 KV cache), built as FlashMLA's sparse decode test builds its
performance cases: per case random.seed(0), then cache_seqlens[i] = max(int(random.normalvariate(
s_k, s_k/2)), s_q) for the main cache and the same for the extra cache (drawn next); each sequence
owns randomly permuted pages (flash_mla.kv_cache.quantize_k_cache fills them: V3.2 layout for
d_qk 576, MODEL1 for 512); each query token's index list names distinct random tokens of its own
sequence in random order, padded with -1 where the sequence is shorter than topk. V3.2 uses pages
of 64 tokens; MODEL1 the configurations of FlashMLA's test (main pages 256, extra pages 64; the
peak case pages of 64).

Time is the WHOLE operation (flash_mla_with_kvcache: split-KV kernel and combine; the plan is
made by the first call of a FlashMLASchedMeta and reused), median of --reps CUDA-event timings
after --warmup calls, with a 256 MB buffer cleared before each timed call (flushes the 50 MB L2
and keeps the GPU busy while Python enqueues the call). "span us" times the same calls as FlashMLA's
own tests time the anchors: from the first kernel's start to the last kernel's end, read from the
CUDA profiler (CUPTI), same flush; "span ratio" = anchor time / span. "recipe us" is the span
under the whole recipe of FlashMLA's tests, which made the anchors (a cool-down before the case,
an 8 GB memset before each call, mean of 10; bench_common.recipe_span_us): FlashMLA's own kernels
measured so reproduce their anchors within 1%, so "rcp ratio" (anchor time / recipe us) is the
like-for-like comparison with the anchor figures; the event time stays the headline.

FLOPs = b * s_q * h_q * attended * 2 * (d_qk + d_v), attended = the valid index entries per query
token (main + extra); bytes = each distinct retrieved cache row once (656 B for V3.2, 584 B for
MODEL1: data and scale rows). The ratio column is our TFLOP/s over the anchor's; the anchor
figures count every top-k entry as attended (their TFLOP/s equal all-entries FLOPs / time), so
where sequences are shorter than topk (the topk 16384 rows) the time ratios (anchor time / our
time, > 1 = faster) compare like with like, not the TFLOP/s ratio.
"""

from __future__ import annotations

import argparse
import dataclasses
import random
import sys
from pathlib import Path
from typing import Optional

import flash_mla
from flash_mla.testing import (
    SparseDecodeInputs,
    SparseSourceSpec,
    check_sparse_decode_against_reference,
    make_sparse_decode_inputs,
    sparse_counted_entries,
    sparse_retrieved_tokens,
)

# The shared timing / JSON code next to this script, whatever the working directory.
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import (  # noqa: E402
    add_common_arguments,
    anchor_figures,
    assert_no_nan,
    checked_sequences,
    kernel_span_us,
    or_dash,
    print_table,
    recipe_span_us,
    run_benchmark,
    select_cases,
    time_us,
)

S_Q, D_V = 2, 512
LAYOUTS = {"V3.2": ("v32", 576, 656), "MODEL1": ("model1", 512, 584)}


@dataclasses.dataclass(frozen=True)
class Case:
    layout: str  # "V3.2" or "MODEL1"
    h_q: int
    topk: int
    extra_topk: int
    s_k: int
    b: int
    page: int = 64
    extra_s_k: int = 0
    extra_page: int = 0

    @property
    def key(self) -> tuple:
        return (self.layout, self.h_q, self.topk, self.extra_topk, self.b)

    @property
    def label(self) -> str:
        extra = f"+{self.extra_topk}" if self.extra_topk else ""
        return f"{self.layout} h_q {self.h_q} topk {self.topk}{extra} s_k {self.s_k} b {self.b}"


CASES = (
    [Case("V3.2", 128, 2048, 0, 32768, b) for b in (2, 64, 74, 128)]
    + [Case("V3.2", h_q, 16384, 0, 32768, 148) for h_q in (128, 64)]
    + [
        Case("MODEL1", 64, 128, 512, 16384, 128, page=256, extra_s_k=16384, extra_page=64),
        Case("MODEL1", 128, 128, 1024, 16384, 128, page=256, extra_s_k=16384, extra_page=64),
        Case("MODEL1", 128, 16384, 0, 32768, 148),
    ]
    # Rows without an anchor: fewer heads (one m-block of 64 rows, half or a quarter used).
    + [Case("V3.2", h_q, 2048, 0, 32768, 128) for h_q in (16, 32)]
    + [Case("V3.2", h_q, 16384, 0, 32768, 148) for h_q in (16, 32)]
)

# FlashMLA on the same machines (anchors.md, "Sparse MLA decode"): (TFLOP/s, time in us or None)
# by (layout, h_q, topk, extra_topk, b).
ANCHORS = {
    "H100": {
        ("V3.2", 128, 2048, 0, 2): (106.5, 21.4),
        ("V3.2", 128, 2048, 0, 64): (384.4, 189.9),
        ("V3.2", 128, 2048, 0, 74): (364.4, 231.7),
        ("V3.2", 128, 2048, 0, 128): (391.9, 372.7),
        ("V3.2", 128, 16384, 0, 148): (444.8, 3036.8),
        ("V3.2", 64, 16384, 0, 148): (352.5, 1915.8),
        ("MODEL1", 64, 128, 512, 128): (217.0, 99.0),
        ("MODEL1", 128, 128, 1024, 128): (365.9, 211.3),
        ("MODEL1", 128, 16384, 0, 148): (479.2, 2653.3),
    },
    "H200": {
        ("V3.2", 128, 2048, 0, 64): (395.2, None),
        ("V3.2", 128, 2048, 0, 128): (402.1, None),
        # "peak case (b 148, topk 16384, d_qk 576)": the h_q 128 row of the H100 table.
        ("V3.2", 128, 16384, 0, 148): (447.2, None),
    },
}


@dataclasses.dataclass
class Result:
    layout: str
    h_q: int
    s_q: int
    topk: int
    extra_topk: int
    s_k: int
    b: int
    page: int
    extra_page: int
    mean_attended: float  # valid entries per query token (main + extra)
    retrieved_tokens: int  # distinct cache rows read
    time_us: float
    tflops: float
    gbps: float
    anchor_tflops: Optional[float]
    anchor_time_us: Optional[float]  # from the table, else all-entries FLOPs / anchor TFLOP/s
    ratio: Optional[float]  # our TFLOP/s / anchor TFLOP/s
    time_ratio: Optional[float]  # anchor time / our time (> 1: faster)
    # First kernel start to last kernel end (CUPTI), as FlashMLA's tests time the anchors.
    span_us: float
    span_time_ratio: Optional[float]  # anchor time / our span
    # The anchors' own recipe (bench_common.recipe_span_us): the like-for-like figure.
    recipe_us: float
    recipe_time_ratio: Optional[float]  # anchor time / recipe_us
    checked: str


def draw_seqlens(s_k: int, b: int) -> list[int]:
    """FlashMLA's varlen lengths; continues the current random state (seeded per case)."""
    return [max(int(random.normalvariate(s_k, s_k / 2)), S_Q) for _ in range(b)]


def build_inputs(case: Case) -> SparseDecodeInputs:
    layout, _, _ = LAYOUTS[case.layout]
    random.seed(0)
    seqlens = draw_seqlens(case.s_k, case.b)
    extra_seqlens = draw_seqlens(case.extra_s_k, case.b) if case.extra_topk else None

    def spec(topk: int, page: int, seq_tokens: list[int]) -> SparseSourceSpec:
        return SparseSourceSpec(
            topk=topk,
            page_block_size=page,
            seq_tokens=seq_tokens,
            invalid_fraction=0.0,
            spare_blocks=0,
            block_gap=1 if layout == "v32" else 0,  # as FlashMLA's quantizer lays them out
        )

    extra = None
    if case.extra_topk:
        extra = spec(case.extra_topk, case.extra_page, extra_seqlens)
    return make_sparse_decode_inputs(
        spec(case.topk, case.page, seqlens),
        b=case.b,
        s_q=S_Q,
        h_q=case.h_q,
        layout=layout,
        extra=extra,
        value_scale=0.1,
        value_clamp=1.0,
        poison_unused=False,
        seed=0,
    )


def run_case(case: Case, args, anchors: dict) -> Result:
    _, d_qk, row_bytes = LAYOUTS[case.layout]
    inputs = build_inputs(case)
    sched, _ = flash_mla.get_mla_metadata()

    def call():
        return flash_mla.flash_mla_with_kvcache(
            inputs.q, inputs.main.k_cache, None, None, D_V, sched, None, **inputs.kwargs()
        )

    out, lse = call()  # plans into `sched`
    assert_no_nan(case.label, out, lse)
    checked = "no NaN"
    if not args.no_check:
        rows = checked_sequences(case.b, args.check)
        check_sparse_decode_against_reference(inputs, out[rows], lse[rows], D_V, batch_indices=rows)
        checked = f"reference, {len(rows)} of {case.b} sequences"

    t = time_us(call, args.warmup, args.reps)
    span = kernel_span_us(call, args.warmup, args.reps)
    recipe = recipe_span_us(call)
    caches = [inputs.main] + ([inputs.extra] if inputs.extra is not None else [])
    attended = sum(sparse_counted_entries(c) for c in caches)
    retrieved = sum(sparse_retrieved_tokens(c) for c in caches)
    flops = attended * case.h_q * 2 * (d_qk + D_V)
    nbytes = retrieved * row_bytes
    tflops, gbps = flops / t / 1e6, nbytes / t / 1e3

    # The anchor figures count every top-k entry as attended.
    all_entries = case.b * S_Q * (case.topk + case.extra_topk)
    anchor_tflops, anchor_time = anchor_figures(
        anchors, case.key, all_entries * case.h_q * 2 * (d_qk + D_V)
    )
    return Result(
        layout=case.layout,
        h_q=case.h_q,
        s_q=S_Q,
        topk=case.topk,
        extra_topk=case.extra_topk,
        s_k=case.s_k,
        b=case.b,
        page=case.page,
        extra_page=case.extra_page,
        mean_attended=attended / (case.b * S_Q),
        retrieved_tokens=retrieved,
        time_us=t,
        tflops=tflops,
        gbps=gbps,
        anchor_tflops=anchor_tflops,
        anchor_time_us=anchor_time,
        ratio=tflops / anchor_tflops if anchor_tflops else None,
        time_ratio=anchor_time / t if anchor_time else None,
        span_us=span,
        span_time_ratio=anchor_time / span if anchor_time else None,
        recipe_us=recipe,
        recipe_time_ratio=anchor_time / recipe if anchor_time else None,
        checked=checked,
    )


def print_results(results: list[Result], gpu: str) -> None:
    print_table(
        f"Sparse decode, FP8 KV cache, s_q {S_Q}, h_kv 1, d_v {D_V} (whole operation; anchor = "
        f"FlashMLA on {gpu}, split-KV start to combine end)",
        [
            ("layout", 6, ""),
            ("h_q", 4, ""),
            ("topk", 10, ""),
            ("s_k", 6, ""),
            ("b", 4, ""),
            ("attended", 9, ".0f"),
            ("time us", 9, ".1f"),
            ("TFLOP/s", 8, ".1f"),
            ("GB/s", 6, ".0f"),
            ("anchor TF", 9, ""),
            ("anchor us", 9, ""),
            ("ratio", 6, ""),
            ("t ratio", 7, ""),
            ("span us", 9, ".1f"),
            ("span ratio", 10, ""),
            ("recipe us", 9, ".1f"),
            ("rcp ratio", 9, ""),
        ],
        [
            (
                r.layout,
                r.h_q,
                f"{r.topk}+{r.extra_topk}" if r.extra_topk else str(r.topk),
                r.s_k,
                r.b,
                r.mean_attended,
                r.time_us,
                r.tflops,
                r.gbps,
                or_dash(r.anchor_tflops, "g"),
                or_dash(r.anchor_time_us, ".1f"),
                or_dash(r.ratio, ".3f"),
                or_dash(r.time_ratio, ".3f"),
                r.span_us,
                or_dash(r.span_time_ratio, ".3f"),
                r.recipe_us,
                or_dash(r.recipe_time_ratio, ".3f"),
            )
            for r in results
        ],
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--s-k", type=int, nargs="+", default=None, help="only these s_k rows")
    parser.add_argument("--h-q", type=int, nargs="+", default=None, help="only these h_q rows")
    parser.add_argument("--layout", choices=sorted(LAYOUTS), nargs="+", default=None)
    add_common_arguments(parser, "sparse_decode")
    args = parser.parse_args()

    return run_benchmark(
        "sparse_decode",
        args,
        ANCHORS,
        select_cases(CASES, args, "sparse_decode", "s_k", "h_q", "layout"),
        run_case,
        lambda case, r: (
            f"{case.label}: {r.time_us:8.1f} us {r.tflops:6.1f} TFLOP/s {r.gbps:6.0f} GB/s"
            + ("" if r.ratio is None else f" ratio {r.ratio:.3f} time ratio {r.time_ratio:.3f}")
            + f" ({r.checked})"
        ),
        print_results,
        flops="b * s_q * h_q * valid entries (main + extra) * 2 * (d_qk + d_v)",
        bytes="distinct retrieved cache rows * (656 V3.2, 584 MODEL1)",
    )


if __name__ == "__main__":
    sys.exit(main())
