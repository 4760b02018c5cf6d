#!/usr/bin/env python3
"""Dense MLA decode benchmark: the table of ../shared/anchors.md, measured the same way.

Cases: b = 128, d_qk 576, d_v 512, h_kv 1, page 64, bf16, varlen lengths drawn as FlashMLA's test
does (per case: random.seed(0), then cache_seqlens[i] = max(int(random.normalvariate(s_k, s_k/2)),
s_q) for i in 0..b-1), pages randomly permuted as FlashMLA's test does.

Time is the WHOLE operation (flash_mla_with_kvcache: split-KV kernel and combine; the plan is
made once outside and reused), median of --reps CUDA-event timings after --warmup calls. Before
each timed call a 256 MB buffer is cleared, which keeps the GPU busy while Python enqueues the
call (so launch overhead is not timed). One input set is used: each cache is GBs, far beyond the
50 MB L2, so nothing stays cached between calls.

FLOPs = b * h_q * s_q * mean_s_k * 2 * (d_qk + d_v); bytes = b * (s_q*h_q*d_qk*2 +
mean_s_k*h_kv*d_qk*2 + s_q*h_q*d_v*2), mean_s_k = mean of cache_seqlens (anchors.md).

Page-size rows (--pages, FlashMLA supports only 64): h_q 128 and 16, s_q 1, s_k 8K with pages of
16, 32, 64 and 128 tokens and a non-paged cache ("none": block_table None); "vs p64" is the time
of the page-64 row of the same h_q over this row's time.

Short and small shapes (the dense-decode issue's goals; --no-small leaves them out): b 1 h_q 128
s_k 64K, b 32 s_q 4 h_q 128 s_k 4K varlen causal, b 128 h_q 128 s_k 1K varlen, and the published
ThunderMLA case (b 4, lengths 4641 / 45118 / 1730 / 1696, s_q 4, h_q 16, not causal). Their
reference is a time: FlashMLA's whole operation measured on our H100 (anchors.md) or, for the
ThunderMLA case, ThunderMLA's published 41 us (FlashMLA: 52 us); "ratio" = reference time / ours.

"recipe us" (anchor rows): the whole operation's kernel span (split-KV kernel and combine) under
the recipe of FlashMLA's tests, which made the anchors (a cool-down before the case, an 8 GB
memset before each call, mean of 10; bench_common.recipe_span_us); "rcp ratio" compares it with
the anchor, which counts FlashMLA's split-KV kernel alone (ours includes the combine).
"""

from __future__ import annotations

import argparse
import dataclasses
import random
import sys
from pathlib import Path
from typing import Optional

import torch

import flash_mla
from flash_mla.testing import check_decode_against_reference, make_decode_inputs

# The shared timing / JSON code next to this script, whatever the working directory.
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import (  # noqa: E402
    add_common_arguments,
    anchor_table,
    assert_no_nan,
    checked_sequences,
    or_dash,
    print_table,
    recipe_span_us,
    run_benchmark,
    time_us,
)

B, D_QK, D_V, H_KV, PAGE = 128, 576, 512, 1, 64
S_KS = (4096, 8192, 16384, 32768)
# (h_q, s_q, causal) rows of the anchor table, and the metric each row is compared on.
ROWS = ((128, 1, False), (128, 2, False), (128, 2, True), (64, 1, False), (16, 1, False))
# Page-size rows: (h_q, s_q, causal) at PAGE_ROWS_S_K for each page size (0 = non-paged).
PAGE_ROWS = ((128, 1, False), (16, 1, False))
PAGE_ROWS_S_K = 8192
PAGES = (16, 32, 64, 128, 0)

# FlashMLA on the same machines (anchors.md): TFLOP/s for h_q 128, GB/s for h_q 64 and 16.
ANCHORS = {
    "H100": {
        (128, 1, False): (536, 581, 610, 626),
        (128, 2, False): (683, 723, 741, 749),
        (128, 2, True): (680, 718, 740, 750),
        (64, 1, False): (2549, 2694, 2824, 2911),
        (16, 1, False): (2580, 2733, 2853, 2941),
    },
    "H200": {
        (128, 1, False): (603, 648, 670, 681),
        (128, 2, False): (687, 718, 736, 730),
        (128, 2, True): (686, 718, 735, 741),
        (64, 1, False): (3528, 3778, 3946, 4112),
        (16, 1, False): (3547, 3818, 4035, 4190),
    },
}


# Short and small shapes: (label, h_q, s_q, causal, lengths or a varlen draw (s_k, b)).
SMALL_CASES = (
    ("b 1, h_q 128, s_k 64K", 128, 1, False, (65536,)),
    ("b 32, s_q 4, h_q 128, s_k 4K varlen, causal", 128, 4, True, ("varlen", 4096, 32)),
    ("b 128, h_q 128, s_k 1K varlen", 128, 1, False, ("varlen", 1024, 128)),
    ("b 4, s_q 4, h_q 16, lengths 4641/45118/1730/1696", 16, 4, False, (4641, 45118, 1730, 1696)),
)
# Their reference times (us) and whose they are, per GPU (anchors.md; H100 only).
SMALL_REFERENCES = {
    "H100": {
        SMALL_CASES[0][0]: (79.0, "FlashMLA"),
        SMALL_CASES[1][0]: (246.0, "FlashMLA"),
        SMALL_CASES[2][0]: (108.0, "FlashMLA"),
        SMALL_CASES[3][0]: (41.0, "ThunderMLA"),
    },
}


@dataclasses.dataclass
class Result:
    h_q: int
    s_q: int
    causal: bool
    s_k: int
    b: int
    mean_s_k: float
    time_us: float
    tflops: float
    gbps: float
    metric: str  # "TFLOP/s" or "GB/s": what the anchor row compares
    anchor: Optional[float]
    ratio: Optional[float]  # ours / anchor on `metric`
    checked: str  # what correctness check ran
    page: int = PAGE  # tokens per page; 0 = non-paged cache
    vs_page64: Optional[float] = None  # page-size rows: time of the page-64 row / this time
    label: str = ""  # short and small shapes: the case; anchor / ratio are then times
    reference: str = ""  # whose time the anchor of a short or small shape is
    # Anchor rows: the whole operation's kernel span under the anchors' own recipe
    # (bench_common.recipe_span_us), and the ratio with that time.
    recipe_us: Optional[float] = None
    recipe_ratio: Optional[float] = None


def draw_seqlens(s_k: int, s_q: int, b: int = B) -> list[int]:
    random.seed(0)
    return [max(int(random.normalvariate(s_k, s_k / 2)), s_q) for _ in range(b)]


def run_case(h_q, s_q, causal, s_k, args, anchors, page=PAGE, seqlens=None) -> Result:
    seqlens = seqlens or draw_seqlens(s_k, s_q)
    b = len(seqlens)
    max_pad = (max(seqlens) + 255) // 256 * 256
    layout = dict(page_block_size=page, num_blocks=b * max_pad // page) if page else {"paged": False}
    inputs = make_decode_inputs(
        seqlens,
        s_q=s_q,
        h_q=h_q,
        h_kv=H_KV,
        d_qk=D_QK,
        dtype=torch.bfloat16,
        value_scale=0.1,
        value_clamp=1.0,
        seed=0,
        **layout,
    )
    metadata, num_splits = flash_mla.get_mla_metadata(inputs.cache_seqlens, s_q * h_q // H_KV, H_KV)

    def call():
        return flash_mla.flash_mla_with_kvcache(
            inputs.q,
            inputs.k_cache,
            inputs.block_table,
            inputs.cache_seqlens,
            D_V,
            metadata,
            num_splits,
            causal=causal,
        )

    out, lse = call()
    assert_no_nan(f"h_q={h_q} s_q={s_q} s_k={s_k}", out, lse)
    checked = "no NaN"
    if not args.no_check:
        rows = checked_sequences(b, args.check)
        check_decode_against_reference(
            inputs, out[rows], lse[rows], D_V, causal=causal, batch_indices=rows
        )
        checked = f"reference, {len(rows)} of {b} sequences"

    t = time_us(call, args.warmup, args.reps)
    mean_s_k = sum(seqlens) / b
    flops = b * h_q * s_q * mean_s_k * 2 * (D_QK + D_V)
    nbytes = b * (s_q * h_q * D_QK * 2 + mean_s_k * H_KV * D_QK * 2 + s_q * h_q * D_V * 2)
    tflops, gbps = flops / t / 1e6, nbytes / t / 1e3
    metric = "TFLOP/s" if h_q == 128 else "GB/s"
    anchor = None
    if anchors and (h_q, s_q, causal) in anchors and s_k in S_KS and page == PAGE:
        anchor = anchors[(h_q, s_q, causal)][S_KS.index(s_k)]
    ours = tflops if metric == "TFLOP/s" else gbps
    recipe = recipe_span_us(call) if anchor else None
    return Result(
        h_q,
        s_q,
        causal,
        s_k,
        b,
        mean_s_k,
        t,
        tflops,
        gbps,
        metric,
        anchor,
        ours / anchor if anchor else None,
        checked,
        page,
        recipe_us=recipe,
        recipe_ratio=ours / anchor * t / recipe if anchor else None,
    )


def run_small_case(case, args, gpu: str) -> Result:
    """A short or small shape: its lengths (or a varlen draw), timed like the anchor rows; the
    reference is a time (SMALL_REFERENCES), the ratio reference time / ours."""
    label, h_q, s_q, causal, lengths = case
    if lengths[0] == "varlen":
        _, s_k, b = lengths
        seqlens = draw_seqlens(s_k, s_q, b)
    else:
        seqlens, s_k = list(lengths), max(lengths)
    result = run_case(h_q, s_q, causal, s_k, args, None, PAGE, seqlens)
    result.label = label
    reference = SMALL_REFERENCES.get(gpu, {}).get(label)
    if reference:
        result.anchor, result.reference = reference
        result.ratio = reference[0] / result.time_us
    result.metric = "time"
    return result


def print_results(results: list[Result], gpu: str) -> None:
    anchor_rows = [r for r in results if r.vs_page64 is None and not r.label]
    page_rows = [r for r in results if r.vs_page64 is not None]
    small_rows = [r for r in results if r.label]
    print_table(
        f"Dense decode, b {B}, d_qk {D_QK}, d_v {D_V}, h_kv {H_KV}, page {PAGE}, bf16, varlen "
        f"(whole operation; anchor = FlashMLA on {gpu}, split-KV kernel only)",
        [
            ("h_q", 4, ""),
            ("s_q", 3, ""),
            ("causal", 6, ""),
            ("s_k", 6, ""),
            ("time us", 9, ".1f"),
            ("TFLOP/s", 8, ".1f"),
            ("GB/s", 7, ".0f"),
            ("anchor", 12, ""),
            ("ratio", 6, ""),
            ("recipe us", 9, ""),
            ("rcp ratio", 9, ""),
        ],
        [
            (
                r.h_q,
                r.s_q,
                "yes" if r.causal else "no",
                r.s_k,
                r.time_us,
                r.tflops,
                r.gbps,
                f"{r.anchor:g} {'TF' if r.metric == 'TFLOP/s' else 'GB/s'}" if r.anchor else "-",
                or_dash(r.ratio, ".3f"),
                or_dash(r.recipe_us, ".1f"),
                or_dash(r.recipe_ratio, ".3f"),
            )
            for r in anchor_rows
        ],
    )
    if page_rows:
        print_table(
            f"Dense decode page sizes, b {B}, s_q 1, s_k {PAGE_ROWS_S_K}, bf16, varlen (whole "
            "operation; vs p64 = page-64 time / this time; page none = non-paged cache)",
            [
                ("h_q", 4, ""),
                ("page", 5, ""),
                ("time us", 9, ".1f"),
                ("TFLOP/s", 8, ".1f"),
                ("GB/s", 7, ".0f"),
                ("vs p64", 7, ".3f"),
            ],
            [
                (r.h_q, r.page or "none", r.time_us, r.tflops, r.gbps, r.vs_page64)
                for r in page_rows
            ],
        )
    if small_rows:
        print_table(
            "Dense decode, short and small shapes, d_qk 576, page 64, bf16 (whole operation; "
            "ratio = reference time / ours)",
            [
                ("case", 48, ""),
                ("time us", 9, ".1f"),
                ("TFLOP/s", 8, ".1f"),
                ("GB/s", 7, ".0f"),
                ("reference", 18, ""),
                ("ratio", 6, ""),
            ],
            [
                (
                    r.label,
                    r.time_us,
                    r.tflops,
                    r.gbps,
                    f"{r.reference} {r.anchor:g} us" if r.anchor else "-",
                    or_dash(r.ratio, ".3f"),
                )
                for r in small_rows
            ],
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--s-k", type=int, nargs="+", default=list(S_KS), help="mean lengths")
    parser.add_argument("--h-q", type=int, nargs="+", default=None, help="only these h_q rows")
    parser.add_argument(
        "--pages",
        type=int,
        nargs="*",
        default=list(PAGES),
        help="page sizes of the page-size rows (0 = non-paged; none given = no such rows)",
    )
    parser.add_argument(
        "--no-small", action="store_true", help="leave out the short and small shapes"
    )
    add_common_arguments(parser, "dense_decode")
    args = parser.parse_args()

    cases = [
        (h_q, s_q, causal, s_k, PAGE, False)
        for h_q, s_q, causal in ROWS
        if not args.h_q or h_q in args.h_q
        for s_k in args.s_k
    ]
    # Page-size rows (a page-64 row first, as the reference of each h_q).
    pages = sorted(set(args.pages), key=lambda page: (page != PAGE, page == 0, page))
    if pages and pages != [PAGE]:
        pages = [PAGE] + [page for page in pages if page != PAGE]
        cases += [
            (h_q, s_q, causal, PAGE_ROWS_S_K, page, True)
            for h_q, s_q, causal in PAGE_ROWS
            if not args.h_q or h_q in args.h_q
            for page in pages
        ]
    if not args.no_small:
        cases += [case for case in SMALL_CASES if not args.h_q or case[1] in args.h_q]
    page64_time: dict[int, float] = {}
    gpu = anchor_table(torch.cuda.get_device_name(), ANCHORS)[0]

    def run_one(case, args, anchors) -> Result:
        if isinstance(case[0], str):
            return run_small_case(case, args, gpu)
        h_q, s_q, causal, s_k, page, page_row = case
        # Page rows are compared with page 64 only: the anchor rows above carry the FlashMLA
        # ratios (and the geometric means count each shape once).
        result = run_case(h_q, s_q, causal, s_k, args, None if page_row else anchors, page)
        if page_row:
            if page == PAGE:
                page64_time[h_q] = result.time_us
            result.vs_page64 = page64_time[h_q] / result.time_us
        return result

    return run_benchmark(
        "dense_decode",
        args,
        ANCHORS,
        cases,
        run_one,
        lambda case, r: (
            f"{r.label}: {r.time_us:8.1f} us ratio {r.ratio or 0:.3f} ({r.checked})"
            if r.label
            else f"h_q {r.h_q:3d} s_q {r.s_q} causal {r.causal!s:5} s_k {r.s_k:5d} page {r.page}: "
            f"{r.time_us:8.1f} us "
            f"{r.tflops:6.1f} TFLOP/s {r.gbps:6.0f} GB/s ratio {r.ratio or 0:.3f} ({r.checked})"
        ),
        print_results,
    )


if __name__ == "__main__":
    sys.exit(main())
