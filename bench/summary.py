#!/usr/bin/env python3
"""Prints a short table of benchmark JSON files (bench_dense_decode.py, bench_sparse_decode.py,
bench_sparse_prefill.py): one line per case with the time, TFLOP/s and the ratio to FlashMLA's
anchor figure (event time; sparse decode also the kernel span; every anchor row the span under
the anchors' own recipe, "rcp ratio"), and the geometric mean of the ratios per file.
Usage: bench/summary.py RESULT.json [RESULT.json ...]"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path


def _kind(data: dict, results: list) -> str:
    """"prefill" (bench_sparse_prefill.py), "sparse" (sparse decode) or "dense" (dense decode)."""
    if data.get("operation") == "sparse_prefill" or (results and "s_kv" in results[0]):
        return "prefill"
    return "sparse" if results and "topk" in results[0] else "dense"


def _case(kind: str, r: dict) -> str:
    if kind == "prefill":
        return f"{r['layout']} h_q {r['h_q']} topk {r['topk']} s_kv {r['s_kv']}"
    if kind == "sparse":
        topk = f"{r['topk']}+{r['extra_topk']}" if r["extra_topk"] else str(r["topk"])
        return f"{r['layout']} h_q {r['h_q']} topk {topk} b {r['b']}"
    if r.get("label"):  # a short or small shape: its reference is a time
        return f"{r['label']} (vs {r.get('reference') or '-'})"
    causal = " causal" if r["causal"] else ""
    case = f"h_q {r['h_q']} s_q {r['s_q']}{causal} s_k {r['s_k']}"
    if r.get("vs_page64") is not None:  # a page-size row
        page = r.get("page") or "none"
        case += f" page {page} ({r['vs_page64']:.3f} of page 64)"
    return case


def main(paths: list[str]) -> int:
    rows, means = [], []
    gpu = None
    for path in paths:
        data = json.loads(Path(path).read_text())
        gpu = gpu or data.get("anchor_table")
        results = data.get("results", [])
        kind = _kind(data, results)
        ratios, spans, recipes, small = [], [], [], []
        for r in results:
            # Sparse: the time ratio is the like-for-like figure (see bench_sparse_decode.py).
            ratio = r.get("time_ratio") if kind == "sparse" else r.get("ratio")
            if ratio:
                # Dense short and small shapes (time ratios) get a mean of their own.
                (small if r.get("label") else ratios).append(ratio)
            metric = (
                f"{r['tflops']:.1f} TF"
                if kind in ("sparse", "prefill") or r.get("metric") == "TFLOP/s"
                else f"{r['gbps']:.0f} GB/s"
            )
            # Sparse decode also: the kernel span, timed as FlashMLA's tests time the anchors.
            span = r.get("span_time_ratio") if kind == "sparse" else None
            if span:
                spans.append(span)
            # Every anchor row: the span under the anchors' own recipe (bench_common).
            recipe = r.get("recipe_time_ratio") if kind == "sparse" else r.get("recipe_ratio")
            if recipe:
                recipes.append(recipe)
            rows.append((kind, _case(kind, r), r["time_us"], metric, ratio, span, recipe))
        if ratios:
            means.append((kind, math.exp(sum(map(math.log, ratios)) / len(ratios)), len(ratios)))
        if small:
            mean = math.exp(sum(map(math.log, small)) / len(small))
            means.append((kind + " (short and small shapes)", mean, len(small)))
        if spans:
            means.append(
                (kind + " (kernel span)", math.exp(sum(map(math.log, spans)) / len(spans)), len(spans))
            )
        if recipes:
            mean = math.exp(sum(map(math.log, recipes)) / len(recipes))
            means.append((kind + " (anchors' recipe)", mean, len(recipes)))
    if not rows:
        print("no benchmark results")
        return 0
    print(f"\nSummary (ours vs FlashMLA on {gpu}; ratio > 1 = faster than FlashMLA)")
    width = max(len(case) for _, case, *_ in rows)
    print(
        f"{'bench':<7}  {'case':<{width}}  {'time us':>9}  {'rate':>10}  {'ratio':>6}"
        f"  {'span ratio':>10}  {'rcp ratio':>9}"
    )
    for kind, case, t, metric, ratio, span, recipe in rows:
        shown = f"{ratio:.3f}" if ratio else "-"
        span_shown = f"{span:.3f}" if span else "-"
        recipe_shown = f"{recipe:.3f}" if recipe else "-"
        print(
            f"{kind:<7}  {case:<{width}}  {t:>9.1f}  {metric:>10}  {shown:>6}  {span_shown:>10}"
            f"  {recipe_shown:>9}"
        )
    for kind, mean, count in means:
        print(f"{kind}: geometric mean ratio {mean:.3f} over {count} cases")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
