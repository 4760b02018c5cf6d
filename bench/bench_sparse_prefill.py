#!/usr/bin/env python3
"""Sparse MLA prefill benchmark: the sparse prefill table of ../shared/anchors.md, measured the
same way.

Cases (s_q 4096, h_kv 1, d_v 512, BF16, attn_sink on), built as FlashMLA's
test_flash_mla_sparse_prefill.py builds its performance cases: q and kv N(0, 0.1^2) plus a random
offset in +-0.05 (clamped to +-10), sm_scale 0.5; each query token's index list names topk
distinct random tokens of [0, s_kv) in random order (s_kv >= topk: every entry valid, no
topk_length); attn_sink N(0, 1) per head with -inf / +inf where a second N(0, 1) draw is below
-0.5 / above 0.5; q, kv and indices strided views (every dimension one longer, the last 128
longer), as FlashMLA's non_contiguousify makes them. V3.2 (d_qk 576, h_q 128, topk 2048) at s_kv
8192, 32768 and 131072; MODEL1 (d_qk 512) h_q 64 topk 512 and h_q 128 topk 1024 at s_kv 32768;
and, without an anchor, V3.2 with h_q 16 and 32 (s_kv 32768).

Time is the WHOLE operation (flash_mla_sparse_fwd: its one kernel plus the output allocations),
median of --reps CUDA-event timings after --warmup calls, with a 256 MB buffer cleared before
each timed call (flushes the 50 MB L2 and keeps the GPU busy while Python enqueues the call).
FlashMLA's figures time its one kernel. "recipe us" times the kernel under the whole recipe of
FlashMLA's tests, which made the anchors (a cool-down before the case, an 8 GB memset before
each call, mean of 10; bench_common.recipe_span_us); "rcp ratio" = anchor time / recipe us, the
like-for-like comparison with the anchor figures (the event time stays the headline).

FLOPs = s_q * h_q * topk * 2 * (d_qk + d_v) (anchors.md; every entry counts). The ratio column
is our TFLOP/s over the anchor's (the same as anchor time / our time, > 1 = faster).
Correctness: by default --sample-rows query tokens spread over s_q are checked against the
float64 reference (flash_mla.testing.check_sparse_prefill); --check checks all of them,
--no-check only looks for NaN.
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
    SparsePrefillInputs,
    check_sparse_prefill_against_reference,
    make_sparse_prefill_inputs,
    sparse_prefill_flops,
)

# The shared timing / JSON code next to this script, whatever the working directory.
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import (  # noqa: E402
    add_common_arguments,
    anchor_figures,
    assert_no_nan,
    or_dash,
    print_table,
    recipe_span_us,
    run_benchmark,
    select_cases,
    time_us,
)

S_Q, D_V = 4096, 512
LAYOUTS = {"V3.2": 576, "MODEL1": 512}


@dataclasses.dataclass(frozen=True)
class Case:
    layout: str  # "V3.2" or "MODEL1"
    h_q: int
    topk: int
    s_kv: int

    @property
    def d_qk(self) -> int:
        return LAYOUTS[self.layout]

    @property
    def key(self) -> tuple:
        return (self.layout, self.h_q, self.topk, self.s_kv)

    @property
    def label(self) -> str:
        return f"{self.layout} h_q {self.h_q} topk {self.topk} s_kv {self.s_kv}"


CASES = (
    [Case("V3.2", 128, 2048, s_kv) for s_kv in (8192, 32768, 131072)]
    + [Case("MODEL1", 64, 512, 32768), Case("MODEL1", 128, 1024, 32768)]
    # Rows without an anchor: fewer heads (one 64-row block of query heads, a quarter or half
    # used).
    + [Case("V3.2", h_q, 2048, 32768) for h_q in (16, 32)]
)

# FlashMLA on the same machines (anchors.md, "Sparse MLA prefill"): (TFLOP/s, time in us or None)
# by (layout, h_q, topk, s_kv).
ANCHORS = {
    "H100": {
        ("V3.2", 128, 2048, 8192): (680.0, 3436.0),
        ("V3.2", 128, 2048, 32768): (629.4, 3712.0),
        ("V3.2", 128, 2048, 131072): (549.6, 4251.0),
        ("MODEL1", 64, 512, 32768): (457.7, 601.0),
        ("MODEL1", 128, 1024, 32768): (577.6, 1904.0),
    },
    "H200": {
        ("V3.2", 128, 2048, 8192): (669.9, None),
        ("V3.2", 128, 2048, 32768): (629.6, None),
        ("V3.2", 128, 2048, 131072): (576.5, None),
    },
}


@dataclasses.dataclass
class Result:
    layout: str
    d_qk: int
    h_q: int
    s_q: int
    topk: int
    s_kv: int
    time_us: float
    tflops: float
    anchor_tflops: Optional[float]
    anchor_time_us: Optional[float]  # from the table, else FLOPs / anchor TFLOP/s
    ratio: Optional[float]  # our TFLOP/s / anchor TFLOP/s (= anchor time / our time)
    # The anchors' own recipe (bench_common.recipe_span_us): the like-for-like figure.
    recipe_us: float
    recipe_ratio: Optional[float]  # anchor time / recipe_us
    checked: str


def build_inputs(case: Case) -> SparsePrefillInputs:
    random.seed(0)
    return make_sparse_prefill_inputs(
        S_Q,
        case.s_kv,
        case.topk,
        h_q=case.h_q,
        d_qk=case.d_qk,
        d_v=D_V,
        sm_scale=0.5,
        sink="flashmla",
        strided=True,
        poison_unused=False,
        value_scale=0.1,
        value_offset=(random.random() - 0.5) / 10,
        value_clamp=10.0,
        seed=0,
    )


def sample_rows(count: int) -> list[int]:
    """`count` query tokens spread evenly over s_q, the first and last included."""
    if count >= S_Q:
        return list(range(S_Q))
    step = (S_Q - 1) / max(count - 1, 1)
    return sorted({round(i * step) for i in range(count)})


def run_case(case: Case, args, anchors: dict) -> Result:
    inputs = build_inputs(case)

    def call():
        return flash_mla.flash_mla_sparse_fwd(*inputs.args(), **inputs.kwargs())

    out, max_logits, lse = call()
    assert_no_nan(case.label, out, max_logits, lse)
    checked = "no NaN"
    if not args.no_check:
        rows = list(range(S_Q)) if args.check else sample_rows(args.sample_rows)
        check_sparse_prefill_against_reference(inputs, out, max_logits, lse, rows=rows)
        checked = f"reference, {len(rows)} of {S_Q} query tokens"
    del out, max_logits, lse

    t = time_us(call, args.warmup, args.reps)
    recipe = recipe_span_us(call)
    flops = sparse_prefill_flops(S_Q, case.h_q, case.topk, case.d_qk, D_V)
    tflops = flops / t / 1e6
    anchor_tflops, anchor_time = anchor_figures(anchors, case.key, flops)
    return Result(
        layout=case.layout,
        d_qk=case.d_qk,
        h_q=case.h_q,
        s_q=S_Q,
        topk=case.topk,
        s_kv=case.s_kv,
        time_us=t,
        tflops=tflops,
        anchor_tflops=anchor_tflops,
        anchor_time_us=anchor_time,
        ratio=tflops / anchor_tflops if anchor_tflops else None,
        recipe_us=recipe,
        recipe_ratio=anchor_time / recipe if anchor_time else None,
        checked=checked,
    )


def print_results(results: list[Result], gpu: str) -> None:
    print_table(
        f"Sparse prefill, BF16, s_q {S_Q}, h_kv 1, d_v {D_V}, attn_sink on (whole operation; "
        f"anchor = FlashMLA on {gpu}, its kernel)",
        [
            ("layout", 6, ""),
            ("d_qk", 4, ""),
            ("h_q", 4, ""),
            ("topk", 5, ""),
            ("s_kv", 6, ""),
            ("time us", 9, ".1f"),
            ("TFLOP/s", 8, ".1f"),
            ("anchor TF", 9, ""),
            ("anchor us", 9, ""),
            ("ratio", 6, ""),
            ("recipe us", 9, ".1f"),
            ("rcp ratio", 9, ""),
        ],
        [
            (
                r.layout,
                r.d_qk,
                r.h_q,
                r.topk,
                r.s_kv,
                r.time_us,
                r.tflops,
                or_dash(r.anchor_tflops, "g"),
                or_dash(r.anchor_time_us, ".0f"),
                or_dash(r.ratio, ".3f"),
                r.recipe_us,
                or_dash(r.recipe_ratio, ".3f"),
            )
            for r in results
        ],
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    # --s-k (as the decode benchmarks name it, so that scripts/bench.sh can pass one set of
    # options to all of them) selects s_kv rows.
    parser.add_argument(
        "--s-kv", "--s-k", dest="s_kv", type=int, nargs="+", default=None, help="only these s_kv"
    )
    parser.add_argument("--h-q", type=int, nargs="+", default=None, help="only these h_q rows")
    parser.add_argument("--layout", choices=sorted(LAYOUTS), nargs="+", default=None)
    parser.add_argument(
        "--sample-rows",
        type=int,
        default=256,
        help="query tokens checked against the reference (default 256; --check: all)",
    )
    add_common_arguments(parser, "sparse_prefill")
    args = parser.parse_args()

    return run_benchmark(
        "sparse_prefill",
        args,
        ANCHORS,
        select_cases(CASES, args, "sparse_prefill", "s_kv", "h_q", "layout"),
        run_case,
        lambda case, r: (
            f"{case.label}: {r.time_us:8.1f} us {r.tflops:6.1f} TFLOP/s"
            + ("" if r.ratio is None else f" ratio {r.ratio:.3f}")
            + f" ({r.checked})"
        ),
        print_results,
        operation="sparse_prefill",
        flops="s_q * h_q * topk * 2 * (d_qk + d_v)",
    )


if __name__ == "__main__":
    sys.exit(main())
