"""Testing helpers: PyTorch references, the project's tolerances, and input generators.

Used by tests/python and bench/. The references compute in float64 (inputs upcast). The dense one
gathers each sequence's pages through its block table (any page size; or reads k_cache[i, :n] of a
non-paged cache) and never reads rows past cache_seqlens, so NaN in unused rows and garbage in
unused block-table entries do not reach it, and it gives NaN for a sequence with a bad length or
a bad used table entry, as the kernel does (dense_decode_value_errors); the sparse one
(reference_sparse_decode) gathers only the rows that counted index entries name, so NaN in every
other row (make_sparse_decode_inputs puts it there) does not reach it either; so does the sparse
prefill one (reference_sparse_prefill), which works through the query tokens in chunks so that
s_q in the tens of thousands fits, and check_sparse_prefill checks chunk by chunk likewise.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Optional, Sequence

import torch


@dataclasses.dataclass(frozen=True)
class Tolerance:
    """An element passes when |err| < abs_tol or |err| / |ref| < rel_tol; the whole tensor
    also needs 1 - cos_sim < cos_tol (cos_sim = 2 sum(a r) / sum(a^2 + r^2)) when set."""

    abs_tol: float
    rel_tol: float
    cos_tol: Optional[float] = None


OUT_TOL = Tolerance(abs_tol=1e-3, rel_tol=2 / 128, cos_tol=1e-5)
LSE_TOL = Tolerance(abs_tol=1e-6, rel_tol=8 / 65536)
# Sparse decoding: FlashMLA's own tolerances for its sparse decode test.
SPARSE_OUT_TOL = Tolerance(abs_tol=1e-3, rel_tol=2.01 / 128, cos_tol=5e-6)
SPARSE_LSE_TOL = Tolerance(abs_tol=1e-6, rel_tol=8.01 / 65536)


def _first_indices(mask: torch.Tensor, count: int) -> list[tuple[int, ...]]:
    return [tuple(int(i) for i in row) for row in mask.nonzero()[:count].tolist()]


def check_close(
    actual: torch.Tensor,
    expected: torch.Tensor,
    tol: Tolerance = OUT_TOL,
    *,
    name: str = "out",
    max_report: int = 5,
    bound: Optional[torch.Tensor] = None,
) -> int:
    """Raises AssertionError unless `actual` matches `expected` within `tol`.

    +inf, -inf and NaN must sit at identical positions; they are then left out of the numeric
    checks. The message lists the number of failing elements and the first few indices.
    `bound` (shape of `expected`), if given, is a per-element error bound that also lets an
    element pass; returns how many elements passed only by it.
    """
    by_bound_only, dot, squares = check_close_elements(
        actual, expected, tol, name=name, max_report=max_report, bound=bound
    )
    check_cosine(dot, squares, tol, name=name)
    return by_bound_only


def check_close_elements(
    actual: torch.Tensor,
    expected: torch.Tensor,
    tol: Tolerance,
    *,
    name: str = "out",
    max_report: int = 5,
    bound: Optional[torch.Tensor] = None,
) -> tuple[int, float, float]:
    """The element-wise part of check_close (inf/NaN positions, |err| < abs_tol or |err|/|ref| <
    rel_tol or |err| <= bound); returns (elements that passed only by `bound`, sum(a * r),
    sum(a^2 + r^2)) over the finite elements, so that a caller checking a tensor in pieces can
    add the sums up and call check_cosine once."""
    if tuple(actual.shape) != tuple(expected.shape):
        raise AssertionError(
            f"{name}: shape {tuple(actual.shape)} != expected {tuple(expected.shape)}"
        )
    a = actual.detach().to(device=expected.device, dtype=torch.float64)
    e = expected.detach().to(dtype=torch.float64)

    for label, in_a, in_e in (
        ("NaN", a.isnan(), e.isnan()),
        ("+inf", a == math.inf, e == math.inf),
        ("-inf", a == -math.inf, e == -math.inf),
    ):
        differs = in_a != in_e
        if bool(differs.any()):
            raise AssertionError(
                f"{name}: {label} positions differ at {int(differs.sum())} of {a.numel()} elements "
                f"({int(in_a.sum())} in actual, {int(in_e.sum())} in expected); first at "
                f"{_first_indices(differs, max_report)}"
            )

    finite = e.isfinite()
    a = torch.where(finite, a, 0.0)
    e = torch.where(finite, e, 0.0)
    err = (a - e).abs()
    passed = (err < tol.abs_tol) | (err < tol.rel_tol * e.abs())
    by_bound_only = 0
    if bound is not None:
        within = finite & (err <= bound.to(device=err.device, dtype=torch.float64))
        by_bound_only = int((within & ~passed).sum())
        passed = passed | within
    if not bool(passed.all()):
        failed = ~passed
        details = ", ".join(
            f"{idx}: {a[idx].item():.6g} vs {e[idx].item():.6g}"
            for idx in _first_indices(failed, max_report)
        )
        raise AssertionError(
            f"{name}: {int(failed.sum())} of {a.numel()} elements exceed |err| < {tol.abs_tol:g} "
            f"or |err|/|ref| < {tol.rel_tol:g} (max |err| {err.max().item():.3g}); first: {details}"
        )
    if tol.cos_tol is None:
        return by_bound_only, 0.0, 0.0
    return by_bound_only, (a * e).sum().item(), (a * a + e * e).sum().item()


def check_cosine(dot: float, squares: float, tol: Tolerance, *, name: str = "out") -> None:
    """1 - cos_sim < tol.cos_tol (when set), cos_sim = 2 sum(a r) / sum(a^2 + r^2) from the sums
    check_close_elements returns (added up over the pieces of a tensor)."""
    if tol.cos_tol is None:
        return
    cos_diff = 0.0 if squares == 0 else 1.0 - 2.0 * dot / squares
    if cos_diff >= tol.cos_tol:
        raise AssertionError(f"{name}: 1 - cosine similarity = {cos_diff:.3g} >= {tol.cos_tol:g}")


# Unit roundoff of the dtype P is rounded to before the P V tensor-core product.
UNIT_ROUNDOFF = {torch.bfloat16: 2.0**-8, torch.float16: 2.0**-11}
# lse inherits the float32 rounding of the largest logit and of the log of the row sum.
LSE_ROUNDING = 2.0**-21
# Totals over a test session of elements that passed only by the rounding bounds (printed by
# tests/python/conftest.py, so the numbers are seen, not hidden).
ROUNDING_BOUND_STATS = {
    "checks": 0,
    "out_elements": 0,
    "out_within_rounding_bound_only": 0,
    "lse_within_rounding_bound_only": 0,
    "max_logits_within_rounding_bound_only": 0,
}


def _out_rounding_bound(
    dtype: torch.dtype, out_abs: torch.Tensor, ref_out: torch.Tensor
) -> torch.Tensor:
    """u * (sum_t w_t |v_t| + |ref|): P is rounded to `dtype` (unit roundoff u) before P V."""
    return UNIT_ROUNDOFF[dtype] * (out_abs.double() + ref_out.double().abs())


def _lse_rounding_bound(ref: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    """2^-21 * (logit_scale + |ref|) for lse or max_logits, 0 where ref is not finite."""
    finite = ref.isfinite()
    return LSE_ROUNDING * torch.where(finite, logit_scale.double() + ref.double().abs(), 0.0)


def _record_rounding_bound_counts(out_elements: int, counts: dict[str, int]) -> dict[str, int]:
    """Adds one check's counts of elements that passed only by the rounding bounds ({"out": n,
    "lse": n, ...}) to ROUNDING_BOUND_STATS; returns them under the names the stats use."""
    ROUNDING_BOUND_STATS["checks"] += 1
    ROUNDING_BOUND_STATS["out_elements"] += out_elements
    named = {f"{name}_within_rounding_bound_only": n for name, n in counts.items()}
    for key, n in named.items():
        ROUNDING_BOUND_STATS[key] += n
    return named


def _check_zero_where_empty(out: torch.Tensor, empty: torch.Tensor, name: str, what: str) -> None:
    """Where `empty` (the leading dims of out) marks a query without a counted entry, out must be
    exactly 0; `what` names those queries in the message."""
    if bool(empty.any()):
        nonzero = (out[empty] != 0).any(dim=-1)
        if bool(nonzero.any()):
            raise AssertionError(
                f"{name}: {int(nonzero.sum())} of {int(empty.sum())} {what} have a non-zero "
                "output (expected exactly 0)"
            )


def check_decode(
    out: torch.Tensor,
    lse: torch.Tensor,
    ref_out: torch.Tensor,
    ref_lse: torch.Tensor,
    out_abs: Optional[torch.Tensor] = None,
    logit_scale: Optional[torch.Tensor] = None,
    *,
    out_tol: Tolerance = OUT_TOL,
    lse_tol: Tolerance = LSE_TOL,
) -> dict[str, int]:
    """Checks a decode result against the reference with the project tolerances (`out_tol`,
    `lse_tol`; sparse decoding passes SPARSE_OUT_TOL / SPARSE_LSE_TOL). The reference output is
    rounded to the dtype of `out` first, as the kernel's output is.

    With the error scales of reference_dense_decode(return_error_scales=True), an element that
    misses the fixed tolerance still passes when its error is within the rounding the
    arithmetic cannot avoid: P (the softmax weights w_t) is rounded to the input dtype before
    the tensor-core product, as in FlashMLA, so |err| <= u * (sum_t w_t |v_t| + |ref|) with u
    the dtype's unit roundoff; lse may be off by the float32 rounding of its terms,
    2^-21 * (logit_scale + |lse|). Returns how many elements passed only by those bounds.
    """
    bound_out = None if out_abs is None else _out_rounding_bound(out.dtype, out_abs, ref_out)
    bound_lse = None if logit_scale is None else _lse_rounding_bound(ref_lse, logit_scale)
    n_out = check_close(out, ref_out.to(out.dtype), out_tol, name="out", bound=bound_out)
    n_lse = check_close(lse, ref_lse, lse_tol, name="lse", bound=bound_lse)
    return _record_rounding_bound_counts(out.numel(), {"out": n_out, "lse": n_lse})


def _softmax_weights(logits: torch.Tensor, sink: Optional[torch.Tensor] = None) -> tuple:
    """(lse, attends, weights) of logits [..., h_q, tokens] (-inf: not attended): lse over the
    last dim (-inf without an attended token), where it is finite, and the softmax weights (0
    for a row without an attended token), scaled by the attn_sink factor when `sink` [h_q]."""
    row_lse = torch.logsumexp(logits, dim=-1)
    attends = row_lse.isfinite()
    weights = torch.exp(logits - torch.where(attends, row_lse, 0.0).unsqueeze(-1))
    if sink is not None:
        # exp(lse) / (exp(lse) + exp(sink)) = sigmoid(lse - sink): 0 for +inf, 1 for -inf.
        factor = torch.where(attends, torch.sigmoid(row_lse - sink[None, :]), 0.0)
        weights.mul_(factor.unsqueeze(-1))
    return row_lse, attends, weights


def _gathered_logit_scale(
    q: torch.Tensor, kv: torch.Tensor, logits: torch.Tensor, not_counted: torch.Tensor, scale
) -> torch.Tensor:
    """Largest |logit| plus the largest sum_i |q_i k_i| * scale (the magnitude whose float32
    rounding a logit inherits) over the counted entries, 0 without one; q [m, h_q, d], kv
    [m, cols, d], logits [m, h_q, cols] (overwritten), not_counted [m, 1, cols]."""
    magnitude = torch.bmm(q.abs(), kv.abs().transpose(1, 2)).mul_(scale)
    magnitude.masked_fill_(not_counted, 0.0)
    return magnitude.amax(dim=-1) + logits.masked_fill_(not_counted, 0.0).abs().amax(dim=-1)


# ---- Dense decoding (spec section 1) -----------------------------------------------------------

# Kinds of bad values dense decoding finds on the GPU (flash_mla.DeviceError.kind).
NEGATIVE_SEQLEN = "negative_seqlen"
SEQLEN_BEYOND_CAPACITY = "seqlen_beyond_capacity"
BLOCK_TABLE_ENTRY_OUT_OF_RANGE = "block_table_entry_out_of_range"


@dataclasses.dataclass(frozen=True)
class DenseDecodeValueError:
    """A bad value of a dense decode call that only the GPU sees, described with the fields of
    flash_mla.DeviceError (same names, same meaning)."""

    kind: str  # NEGATIVE_SEQLEN, SEQLEN_BEYOND_CAPACITY or BLOCK_TABLE_ENTRY_OUT_OF_RANGE
    argument: str  # "cache_seqlens" or "block_table"
    batch_index: int
    position: int  # the block-table column for a table entry, else -1
    value: int  # the bad value
    limit: int  # the capacity (beyond capacity), num_blocks (table entry), else 0
    operation: str = "dense_decode"


def dense_decode_capacity(k_cache: torch.Tensor, block_table: Optional[torch.Tensor]) -> int:
    """Tokens a sequence of a dense call can hold: block_table.shape[1] * page_block_size, or
    s_k_max = k_cache.shape[1] for a non-paged cache (block_table None)."""
    if block_table is None:
        return int(k_cache.shape[1])
    return int(block_table.shape[1]) * int(k_cache.shape[1])


def dense_decode_value_errors(
    k_cache: torch.Tensor,
    block_table: Optional[torch.Tensor],
    cache_seqlens: torch.Tensor,
    batch_indices: Optional[Sequence[int]] = None,
) -> list[DenseDecodeValueError]:
    """The sequences (of `batch_indices`, all by default) whose values make dense decoding mark
    them NaN, one entry each, in batch order: a negative length, else a length beyond
    dense_decode_capacity, else the first block-table entry outside [0, num_blocks) among the
    ceil(length / page_block_size) the sequence uses (entries past those are never looked at).
    A sequence with several bad table entries may be reported by the GPU with any of them; the
    tests put at most one bad value into a sequence."""
    lengths = [int(n) for n in cache_seqlens.tolist()]
    rows = range(len(lengths)) if batch_indices is None else [int(i) for i in batch_indices]
    capacity = dense_decode_capacity(k_cache, block_table)
    page, num_blocks = int(k_cache.shape[1]), int(k_cache.shape[0])
    table = None if block_table is None else block_table.cpu().long()
    errors = []
    for i in rows:
        n = lengths[i]
        if n < 0:
            errors.append(DenseDecodeValueError(NEGATIVE_SEQLEN, "cache_seqlens", i, -1, n, 0))
        elif n > capacity:
            errors.append(
                DenseDecodeValueError(SEQLEN_BEYOND_CAPACITY, "cache_seqlens", i, -1, n, capacity)
            )
        elif table is not None:
            used = table[i, : (n + page - 1) // page]
            bad = ((used < 0) | (used >= num_blocks)).nonzero().flatten().tolist()
            if bad:
                col = int(bad[0])
                errors.append(
                    DenseDecodeValueError(
                        BLOCK_TABLE_ENTRY_OUT_OF_RANGE,
                        "block_table",
                        i,
                        col,
                        int(used[col]),
                        num_blocks,
                    )
                )
    return errors


def _sequence_rows(
    k_cache: torch.Tensor, table: Optional[torch.Tensor], i: int, n: int
) -> torch.Tensor:
    """The first n token rows [n, h_kv, d_qk] of sequence i: through its block table (rows of
    `table`, on the CPU), or k_cache[i, :n] for a non-paged cache (table None)."""
    if table is None:
        return k_cache[i, :n]
    page, h_kv, d_qk = k_cache.shape[1], k_cache.shape[2], k_cache.shape[3]
    num_pages = (n + page - 1) // page
    pages = table[i, :num_pages].to(device=k_cache.device, dtype=torch.long)
    return k_cache[pages].reshape(num_pages * page, h_kv, d_qk)[:n]


@torch.no_grad()
def reference_dense_decode(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    block_table: Optional[torch.Tensor],
    cache_seqlens: torch.Tensor,
    head_dim_v: int,
    softmax_scale: Optional[float] = None,
    causal: bool = False,
    batch_indices: Optional[Sequence[int]] = None,
    compute_dtype: torch.dtype = torch.float64,
    return_error_scales: bool = False,
):
    """Dense MLA decoding in plain PyTorch (spec section 1).

    Token t of sequence i is k_cache[block_table[i, t // page_block_size], t % page_block_size]
    (any page_block_size >= 1), or k_cache[i, t] when block_table is None (a non-paged cache
    [b, s_k_max, h_kv, d_qk]). Only the first cache_seqlens[i] tokens are read.

    Returns out [n, s_q, h_q, head_dim_v] and lse [n, h_q, s_q], both float32, for the n
    sequences of `batch_indices` (all by default). A query that attends to no token gets
    out = 0 and lse = +inf. A sequence with a bad value (dense_decode_value_errors: a negative
    length, a length beyond the capacity, a used block-table entry outside [0, num_blocks))
    gets NaN in all of its out and lse, as the kernel gives it. With return_error_scales, also
    returns the scales that bound the kernel's inherent rounding error (see check_decode):
    out_abs = sum_t w_t |v_t| (layout of out) and logit_scale [n, h_q, s_q] = max |logit| + max
    sum_i |q_i k_i| * softmax_scale over the attended tokens (0 when none, or for a bad
    sequence).
    """
    b, s_q, h_q, d_qk = q.shape
    h_kv = k_cache.shape[2]
    group = h_q // h_kv
    scale = d_qk ** (-0.5) if softmax_scale is None else softmax_scale
    lengths = cache_seqlens.tolist()
    table = None if block_table is None else block_table.cpu()
    rows = list(range(b)) if batch_indices is None else [int(i) for i in batch_indices]
    bad = {
        e.batch_index for e in dense_decode_value_errors(k_cache, block_table, cache_seqlens, rows)
    }
    device = q.device

    out = torch.zeros(len(rows), s_q, h_q, head_dim_v, dtype=torch.float32, device=device)
    lse = torch.full((len(rows), h_q, s_q), math.inf, dtype=torch.float32, device=device)
    out_abs = torch.zeros_like(out) if return_error_scales else None
    logit_scale = torch.zeros_like(lse) if return_error_scales else None
    for row, i in enumerate(rows):
        if i in bad:
            out[row] = math.nan
            lse[row] = math.nan
            continue
        n = int(lengths[i])
        if n == 0:
            continue
        kv = _sequence_rows(k_cache, table, i, n)
        kv = kv.to(device=device, dtype=compute_dtype).permute(1, 0, 2)  # [h_kv, n, d_qk]
        # Query head h reads KV head h // group: rows of one KV head are (g, j) pairs.
        qi = q[i].to(compute_dtype).permute(1, 0, 2).reshape(h_kv, group * s_q, d_qk)
        logits = torch.bmm(qi, kv.transpose(1, 2)).mul_(scale).view(h_kv, group, s_q, n)
        if causal:
            t = torch.arange(n, device=device)
            last = n - s_q + torch.arange(s_q, device=device)  # query j sees t <= last[j]
            logits.masked_fill_(t[None, :] > last[:, None], -math.inf)
        row_lse, attends, probs = _softmax_weights(logits)  # row_lse [h_kv, group, s_q]
        o = torch.bmm(probs.view(h_kv, group * s_q, n), kv[..., :head_dim_v])
        out[row] = o.view(h_q, s_q, head_dim_v).permute(1, 0, 2).float()
        lse[row] = torch.where(attends, row_lse, math.inf).view(h_q, s_q).float()
        if return_error_scales:
            o_abs = torch.bmm(probs.view(h_kv, group * s_q, n), kv[..., :head_dim_v].abs())
            out_abs[row] = o_abs.view(h_q, s_q, head_dim_v).permute(1, 0, 2).float()
            # Largest |logit| plus the largest sum_i |q_i k_i| (the magnitude whose float32
            # rounding a logit inherits), over the attended tokens.
            attended = logits.isfinite()
            magnitude = torch.bmm(qi.abs(), kv.abs().transpose(1, 2)).mul_(scale)
            magnitude = magnitude.view(h_kv, group, s_q, n).masked_fill(~attended, 0.0)
            bound = magnitude.amax(dim=-1) + logits.masked_fill(~attended, 0.0).abs().amax(dim=-1)
            logit_scale[row] = bound.view(h_q, s_q).float()
    if return_error_scales:
        return out, lse, out_abs, logit_scale
    return out, lse


def check_decode_against_reference(
    inputs: "DecodeInputs",
    out: torch.Tensor,
    lse: torch.Tensor,
    head_dim_v: int,
    *,
    softmax_scale: Optional[float] = None,
    causal: bool = False,
    batch_indices: Optional[Sequence[int]] = None,
) -> dict[str, int]:
    """Computes the float64 reference of `inputs` (for `batch_indices`, all by default) and
    checks `out`/`lse` (already restricted to those sequences) against it with check_decode.
    A sequence with a bad value (dense_decode_value_errors) must be NaN throughout, as the
    reference has it."""
    ref_out, ref_lse, out_abs, logit_scale = reference_dense_decode(
        inputs.q,
        inputs.k_cache,
        inputs.block_table,
        inputs.cache_seqlens,
        head_dim_v,
        softmax_scale=softmax_scale,
        causal=causal,
        batch_indices=batch_indices,
        return_error_scales=True,
    )
    return check_decode(out, lse, ref_out, ref_lse, out_abs, logit_scale)


def check_nan_sequences(out: torch.Tensor, lse: torch.Tensor, batch_indices: Sequence[int]) -> None:
    """Every element of out[i] and lse[i] must be NaN for each i of `batch_indices` (out
    [b, s_q, h_q, d_v] and lse [b, h_q, s_q] of a whole batch): dense decoding's answer for a
    sequence with a bad length or block-table entry."""
    for i in batch_indices:
        for name, tensor in (("out", out), ("lse", lse)):
            not_nan = ~tensor[i].isnan()
            if bool(not_nan.any()):
                raise AssertionError(
                    f"{name}[{i}]: {int(not_nan.sum())} of {tensor[i].numel()} elements are not "
                    f"NaN (sequence {i} has a bad value, so all must be); first at "
                    f"{_first_indices(not_nan, 5)}"
                )


# Entries written into block-table slots that no token uses: out of range in both directions.
GARBAGE_BLOCK_IDS = (2**30, -1, 2**31 - 1, -(2**31))


@dataclasses.dataclass
class DecodeInputs:
    """One decode batch: q, a KV cache with NaN in every row past a sequence's length, and the
    lengths. Paged (block_table given): k_cache [num_blocks, page_block_size, h_kv, d_qk] with
    randomly permuted pages, and a block table with garbage in the unused entries. Non-paged
    (block_table None): k_cache [b, s_k_max, h_kv, d_qk], token t of sequence i at k_cache[i, t].
    """

    q: torch.Tensor  # [b, s_q, h_q, d_qk]
    k_cache: torch.Tensor  # [num_blocks, page_block_size, h_kv, d_qk] or [b, s_k_max, h_kv, d_qk]
    block_table: Optional[torch.Tensor]  # [b, max_blocks] int32; None: non-paged
    cache_seqlens: torch.Tensor  # [b] int32
    capacity: list[int]  # tokens each sequence's pages can hold (non-paged: s_k_max)
    value_scale: float = 1.0
    value_clamp: Optional[float] = None
    # The NaN-filled buffer k_cache is a view into (make_decode_inputs(strided=True)), else None.
    k_storage: Optional[torch.Tensor] = None

    @property
    def paged(self) -> bool:
        return self.block_table is not None

    @property
    def page_block_size(self) -> int:
        """k_cache.shape[1]: tokens per page, or s_k_max for a non-paged cache."""
        return int(self.k_cache.shape[1])


def _random_(t: torch.Tensor, scale: float, clamp: Optional[float], gen: torch.Generator) -> None:
    t.normal_(0.0, scale, generator=gen)
    if clamp is not None:
        t.clamp_(-clamp, clamp)


def _mark_unused_rows_nan_(inputs: DecodeInputs, lengths: Sequence[int]) -> None:
    """NaN into every cache row that no sequence uses (rows past each length). Lengths are
    clamped to [0, capacity] and out-of-range table entries skipped, so that it also runs on a
    batch a test has given bad values."""
    k_cache = inputs.k_cache
    num_blocks, page = k_cache.shape[0], k_cache.shape[1]
    if inputs.block_table is None:
        used = torch.tensor([min(max(int(n), 0), page) for n in lengths], dtype=torch.long)
        unused = torch.arange(page)[None, :] >= used[:, None]  # [b, s_k_max]
        k_cache[unused.to(k_cache.device)] = float("nan")
        return
    table = inputs.block_table.cpu().long()
    capacity = table.shape[1] * page
    valid = torch.zeros(num_blocks, dtype=torch.long)
    for i, n in enumerate(lengths):
        full, rest = divmod(min(max(int(n), 0), capacity), page)
        ids = table[i, :full]
        valid[ids[(ids >= 0) & (ids < num_blocks)]] = page
        if rest and 0 <= int(table[i, full]) < num_blocks:
            block = int(table[i, full])
            valid[block] = max(int(valid[block]), rest)
    unused = torch.arange(page)[None, :] >= valid[:, None]  # [num_blocks, page]
    k_cache[unused.to(k_cache.device)] = float("nan")


def _cache_tensor(
    shape: tuple[int, int, int, int],
    dtype: torch.dtype,
    device: torch.device | str,
    strided: bool,
) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    """(k_cache, storage): a new tensor of `shape`, or with `strided` a view into a NaN-filled
    buffer one entry longer in the first dim, two rows longer in the second and 64 columns
    wider (strides stay multiples of 8 elements), starting at [1, 1] of it."""
    if not strided:
        return torch.empty(shape, dtype=dtype, device=device), None
    n0, n1, h_kv, d = shape
    storage = torch.full((n0 + 1, n1 + 2, h_kv, d + 64), math.nan, dtype=dtype, device=device)
    return storage[1 : n0 + 1, 1 : n1 + 1, :, :d], storage


def make_decode_inputs(
    seqlens: Sequence[int],
    *,
    s_q: int,
    h_q: int,
    h_kv: int,
    d_qk: int,
    dtype: torch.dtype,
    device: torch.device | str = "cuda",
    page_block_size: int = 64,
    capacity: Optional[Sequence[int]] = None,
    num_blocks: Optional[int] = None,
    extra_table_columns: int = 2,
    value_scale: float = 1.0,
    value_clamp: Optional[float] = None,
    seed: int = 0,
    paged: bool = True,
    extra_rows: int = 0,
    strided: bool = False,
) -> DecodeInputs:
    """Builds a decode batch for `seqlens` (may be empty: b = 0).

    Paged (the default): each sequence owns ceil(max(seqlen, capacity) / page_block_size) pages
    (any page_block_size >= 1) drawn from a random permutation of a pool of `num_blocks` pages
    (default: just enough, plus a few spares); the block table has `extra_table_columns` more
    columns than the longest sequence needs, those and the unused ones holding
    GARBAGE_BLOCK_IDS.

    Non-paged (paged=False): block_table is None and k_cache is [b, s_k_max, h_kv, d_qk] with
    s_k_max = max(seqlen, capacity) over the sequences plus `extra_rows` (at least 1);
    page_block_size, num_blocks and extra_table_columns are not used. Every sequence's capacity
    is s_k_max.

    With `strided`, k_cache is a view into a larger NaN-filled buffer (DecodeInputs.k_storage;
    see _cache_tensor), so it is not contiguous. Values are standard normal times
    `value_scale`, clamped to +-`value_clamp` if given; every cache row past a sequence's
    length is NaN.
    """
    b = len(seqlens)
    cap = [max(int(n), int(c)) for n, c in zip(seqlens, capacity or seqlens)]
    lengths = torch.tensor([int(n) for n in seqlens], dtype=torch.int32)
    q = torch.empty(b, s_q, h_q, d_qk, dtype=dtype, device=device)
    if not paged:
        if extra_rows < 0:
            raise ValueError(f"extra_rows must be >= 0, got {extra_rows}")
        s_k_max = max(max(cap, default=0) + extra_rows, 1)
        k_cache, storage = _cache_tensor((b, s_k_max, h_kv, d_qk), dtype, device, strided)
        inputs = DecodeInputs(
            q=q,
            k_cache=k_cache,
            block_table=None,
            cache_seqlens=lengths.to(device),
            capacity=[s_k_max] * b,
            value_scale=value_scale,
            value_clamp=value_clamp,
            k_storage=storage,
        )
        refill_(inputs, seed=seed + 1)
        return inputs

    if page_block_size < 1:
        raise ValueError(f"page_block_size must be >= 1, got {page_block_size}")
    if extra_rows:
        raise ValueError("extra_rows is for non-paged inputs (paged=False)")
    pages_per_seq = [(c + page_block_size - 1) // page_block_size for c in cap]
    needed = sum(pages_per_seq)
    pool = max(num_blocks or 0, needed + 3)
    gen_cpu = torch.Generator().manual_seed(seed)
    perm = torch.randperm(pool, generator=gen_cpu)

    width = max(max(pages_per_seq, default=0) + extra_table_columns, 1)
    garbage = torch.tensor(GARBAGE_BLOCK_IDS, dtype=torch.int64)
    table = garbage[torch.arange(b * width) % len(garbage)].view(b, width)
    start = 0
    for i, count in enumerate(pages_per_seq):
        table[i, :count] = perm[start : start + count]
        start += count

    k_cache, storage = _cache_tensor((pool, page_block_size, h_kv, d_qk), dtype, device, strided)
    inputs = DecodeInputs(
        q=q,
        k_cache=k_cache,
        block_table=table.to(dtype=torch.int32, device=device),
        cache_seqlens=lengths.to(device),
        capacity=cap,
        value_scale=value_scale,
        value_clamp=value_clamp,
        k_storage=storage,
    )
    refill_(inputs, seed=seed + 1)
    return inputs


def refill_(
    inputs: DecodeInputs, seqlens: Optional[Sequence[int]] = None, *, seed: int = 1
) -> None:
    """Writes new random values into q and k_cache in place (the tensors keep their storage, as a
    CUDA graph needs) and optionally new lengths into cache_seqlens; rows past the lengths
    become NaN again. New lengths must fit the capacity the batch was built with."""
    if seqlens is not None:
        if len(seqlens) != len(inputs.capacity) or any(
            int(n) > c for n, c in zip(seqlens, inputs.capacity)
        ):
            raise ValueError(f"seqlens {list(seqlens)} exceed the capacity {inputs.capacity}")
        inputs.cache_seqlens.copy_(torch.tensor(list(seqlens), dtype=torch.int32))
    gen = torch.Generator(device=inputs.q.device).manual_seed(seed)
    _random_(inputs.q, inputs.value_scale, inputs.value_clamp, gen)
    _random_(inputs.k_cache, inputs.value_scale, inputs.value_clamp, gen)
    _mark_unused_rows_nan_(inputs, inputs.cache_seqlens.tolist())


# ---- Sparse decoding (spec section 2) ----------------------------------------------------------

# Cache layouts of sparse decoding: head_dim_qk (None: 576 or 512) and bytes a token row shows.
SPARSE_LAYOUTS = {"v32": (576, 656), "model1": (512, 584), "bf16": (None, None)}
_MODEL1_ROW_BYTES, _MODEL1_SCALE_BYTES, _MODEL1_BLOCK_ALIGN = 576, 8, 576
_NAN_BYTE = 0xFF  # NaN as float8_e4m3fn, float8_e8m0fnu, bfloat16 and float32 bytes alike


@torch.no_grad()
def reference_sparse_decode(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    indices: torch.Tensor,
    topk_length: Optional[torch.Tensor] = None,
    attn_sink: Optional[torch.Tensor] = None,
    extra_k_cache: Optional[torch.Tensor] = None,
    extra_indices: Optional[torch.Tensor] = None,
    extra_topk_length: Optional[torch.Tensor] = None,
    softmax_scale: Optional[float] = None,
    head_dim_v: int = 512,
    *,
    batch_indices: Optional[Sequence[int]] = None,
    compute_dtype: torch.dtype = torch.float64,
    return_error_scales: bool = False,
    max_chunk_bytes: int = 512 << 20,
):
    """Sparse MLA decoding in plain PyTorch (spec section 2, flashmla/sparse_decode.h).

    k_cache / extra_k_cache are the caches as values: [num_blocks, page_block_size, 1, d_qk]
    (bfloat16, FP8 caches dequantized, e.g. with flash_mla.kv_cache.dequantize_k_cache). Token
    x of a cache is k_cache[x // page_block_size, x % page_block_size, 0]. For query token s of
    sequence i, entry j of indices[i, s] counts when 0 <= x < num_blocks * page_block_size and
    j < topk_length[i] (a negative length counts as 0); the counted main and extra tokens share
    one softmax (a token listed twice counts twice). Only the rows of counted entries are read
    (gathered one by one), so NaN anywhere else never reaches the result.

    Returns out [n, s_q, h_q, head_dim_v] and lse [n, h_q, s_q], both float32, for the n
    sequences of `batch_indices` (all by default). With attn_sink, out is scaled by
    exp(lse) / (exp(lse) + exp(attn_sink[h])) and lse is not. A query without a counted token
    gets out = 0 and lse = +inf. With return_error_scales, also returns out_abs = sum_t w_t |v_t|
    (w_t the weight out gives v_t, the sink factor included; layout of out) and logit_scale
    [n, h_q, s_q] = max |logit| + max sum_i |q_i k_i| * softmax_scale over the counted tokens
    (0 when none): the scales of the rounding the kernel cannot avoid (see check_decode).
    """
    b, s_q, h_q, d_qk = q.shape
    scale = d_qk ** (-0.5) if softmax_scale is None else softmax_scale
    device = q.device
    rows = list(range(b)) if batch_indices is None else [int(i) for i in batch_indices]
    row_index = torch.tensor(rows, dtype=torch.long, device=device)
    n, queries = len(rows), len(rows) * s_q

    sources = [(k_cache, indices, topk_length)]
    if extra_k_cache is not None:
        if extra_indices is None:
            raise ValueError("reference_sparse_decode: extra_k_cache needs extra_indices")
        sources.append((extra_k_cache, extra_indices, extra_topk_length))
    elif extra_indices is not None or extra_topk_length is not None:
        raise ValueError("reference_sparse_decode: extra_indices needs extra_k_cache")
    prepared = []  # (cache, token index [queries, cols], counted [queries, cols])
    for cache, idx_all, length in sources:
        idx = idx_all.to(device)[row_index].long()  # [n, s_q, cols]
        cols = idx.shape[-1]
        lens = None if length is None else length.to(device)[row_index]
        counted = _counted_entries(idx, cache.shape[0] * cache.shape[1], lens)
        prepared.append((cache, idx.reshape(queries, cols), counted.reshape(queries, cols)))
    total_cols = sum(p[1].shape[1] for p in prepared)

    out = torch.zeros(queries, h_q, head_dim_v, dtype=torch.float32, device=device)
    lse = torch.full((queries, h_q), math.inf, dtype=torch.float32, device=device)
    out_abs = torch.zeros_like(out) if return_error_scales else None
    logit_scale = torch.zeros_like(lse) if return_error_scales else None
    q_rows = q[row_index].reshape(queries, h_q, d_qk)
    sink = None if attn_sink is None else attn_sink.to(device=device, dtype=compute_dtype)

    itemsize = torch.empty((), dtype=compute_dtype).element_size()
    per_query = max(total_cols, 1) * itemsize * (2 * d_qk + 4 * h_q)
    chunk = max(1, max_chunk_bytes // per_query)
    for start in range(0, queries, chunk):
        stop = min(start + chunk, queries)
        kv = torch.zeros(stop - start, total_cols, d_qk, dtype=compute_dtype, device=device)
        counted_all = torch.zeros(stop - start, total_cols, dtype=torch.bool, device=device)
        col = 0
        for cache, idx, counted in prepared:
            cols = idx.shape[1]
            c = counted[start:stop]
            where = c.nonzero(as_tuple=True)
            tokens = idx[start:stop][where].to(cache.device)
            page = cache.shape[1]
            gathered = cache[tokens // page, tokens % page, 0]  # only the counted rows
            kv_cols = kv[:, col : col + cols]
            kv_cols[where] = gathered.to(device=device, dtype=compute_dtype)
            counted_all[:, col : col + cols] = c
            col += cols
        not_counted = ~counted_all[:, None, :]  # [m, 1, T]
        qc = q_rows[start:stop].to(compute_dtype)
        logits = torch.bmm(qc, kv.transpose(1, 2)).mul_(scale).masked_fill_(not_counted, -math.inf)
        row_lse, attends, weights = _softmax_weights(logits, sink)  # row_lse [m, h_q]
        values = kv[..., :head_dim_v]
        out[start:stop] = torch.bmm(weights, values).float()
        lse[start:stop] = torch.where(attends, row_lse, math.inf).float()
        if return_error_scales:
            out_abs[start:stop] = torch.bmm(weights, values.abs()).float()
            bound = _gathered_logit_scale(qc, kv, logits, not_counted, scale)
            logit_scale[start:stop] = bound.float()

    out = out.view(n, s_q, h_q, head_dim_v)
    lse = lse.view(n, s_q, h_q).transpose(1, 2).contiguous()
    if return_error_scales:
        out_abs = out_abs.view(n, s_q, h_q, head_dim_v)
        logit_scale = logit_scale.view(n, s_q, h_q).transpose(1, 2).contiguous()
        return out, lse, out_abs, logit_scale
    return out, lse


@dataclasses.dataclass
class SparseSourceSpec:
    """How to build one token source (the main cache or the extra one) of a sparse case."""

    topk: int = 64
    page_block_size: int = 64
    # Tokens each sequence owns in the cache (the indices pick among them); None: random in
    # [topk // 2 + 1, 2 * topk] (so some sequences own fewer than topk and get -1 padding).
    seq_tokens: Optional[Sequence[int]] = None
    # None: no topk_length tensor. Otherwise one entry per sequence (0, > topk or < 0 allowed).
    topk_length: Optional[Sequence[int]] = None
    invalid_fraction: float = 0.1  # entries replaced by -1 or an out-of-range index
    all_invalid_fraction: float = 0.0  # query tokens all of whose entries are invalid
    spare_blocks: int = 2  # pages no sequence owns (NaN rows that invalid indices must not reach)
    block_gap: int = 1  # NaN token rows (MODEL1: 576-byte units) after each block, FlashMLA style
    token_pad: int = 0  # bf16: elements, v32: bytes (multiple of 16) of NaN after each token row
    indices_pad: int = 0  # garbage columns after each index row (indices become a strided view)


@dataclasses.dataclass
class SparseCache:
    """One token source: the cache as the kernel gets it, its values as the reference reads
    them, and the index lists into it."""

    layout: str  # "v32", "model1" or "bf16"
    d_qk: int
    k_cache: torch.Tensor  # the kernel's view into `storage` (FP8: float8_e4m3fn or uint8)
    ref_cache: torch.Tensor  # [num_blocks, page, 1, d_qk] bfloat16 values (FP8: dequantized)
    indices: torch.Tensor  # [b, s_q, topk] int32 (last dim contiguous)
    topk_length: Optional[torch.Tensor]  # [b] int32
    seq_tokens: list[int]
    storage: torch.Tensor  # the whole allocation: gaps and pads hold NaN bytes
    value_scale: float = 1.0
    value_clamp: Optional[float] = None
    poison_unused: bool = True

    @property
    def num_blocks(self) -> int:
        return self.k_cache.shape[0]

    @property
    def page_block_size(self) -> int:
        return self.k_cache.shape[1]


@dataclasses.dataclass
class SparseDecodeInputs:
    """One sparse decode batch (see make_sparse_decode_inputs)."""

    q: torch.Tensor  # [b, s_q, h_q, d_qk] bfloat16 (maybe a strided view)
    main: SparseCache
    extra: Optional[SparseCache]
    attn_sink: Optional[torch.Tensor]  # [h_q] float32
    is_fp8_kvcache: bool
    # [b] int32: tokens each sequence owns in the main cache, what a serving engine would pass
    # to the tensor form of get_mla_metadata (which only uses its size and device).
    cache_seqlens: torch.Tensor
    value_scale: float = 1.0
    value_clamp: Optional[float] = None

    def kwargs(self) -> dict:
        """The sparse arguments of flash_mla_with_kvcache for this batch."""
        extra = self.extra
        return dict(
            is_fp8_kvcache=self.is_fp8_kvcache,
            indices=self.main.indices,
            attn_sink=self.attn_sink,
            extra_k_cache=None if extra is None else extra.k_cache,
            extra_indices_in_kvcache=None if extra is None else extra.indices,
            topk_length=self.main.topk_length,
            extra_topk_length=None if extra is None else extra.topk_length,
        )


def _layout_name(layout) -> str:
    """The layout name ("v32", "model1" or "bf16"), also of FlashMLA-style enum members."""
    name = str(getattr(layout, "name", layout)).lower()
    for key in ("v32", "model1", "bf16"):
        if name.startswith(key):
            return key
    raise ValueError(f"unknown sparse cache layout {layout!r} (expected v32, model1 or bf16)")


def _invalid_fillers(num_tokens: int) -> list[int]:
    """Invalid index values: mostly -1 (FlashMLA's padding), and out-of-range ones in both
    directions."""
    return [-1, -1, -1, -1, -2, num_tokens, num_tokens + 12345, 2**31 - 1, -(2**31)]


def _random_fillers(fillers: torch.Tensor, shape, gen: torch.Generator) -> torch.Tensor:
    return fillers[torch.randint(0, len(fillers), shape, generator=gen, device=fillers.device)]


def _spoil_and_shuffle(
    idx: torch.Tensor,
    fillers: torch.Tensor,
    invalid_fraction: float,
    all_invalid_fraction: float,
    gen: torch.Generator,
) -> torch.Tensor:
    """idx [rows, topk] with `invalid_fraction` of the entries and every entry of
    `all_invalid_fraction` of the rows replaced by random fillers, then each row in random
    order (the draws in this order, so that a seed gives the same lists as before)."""
    rows, topk = idx.shape
    device = idx.device
    if invalid_fraction > 0:
        replace = torch.rand(rows, topk, generator=gen, device=device) < invalid_fraction
        idx = torch.where(replace, _random_fillers(fillers, (rows, topk), gen), idx)
    if all_invalid_fraction > 0:
        empty = torch.rand(rows, generator=gen, device=device) < all_invalid_fraction
        idx = torch.where(empty[:, None], _random_fillers(fillers, (rows, topk), gen), idx)
    order = torch.rand(rows, topk, generator=gen, device=device).argsort(dim=1)
    return idx.gather(1, order)


def _draw_indices(
    spec: SparseSourceSpec,
    seq_tokens: Sequence[int],
    table: torch.Tensor,
    num_tokens: int,
    s_q: int,
    gen: torch.Generator,
    device: torch.device,
) -> torch.Tensor:
    """[b, s_q, topk] int64: each query token picks distinct tokens of its own sequence, in
    random order, mixed with invalid entries."""
    b, topk, page = len(seq_tokens), spec.topk, spec.page_block_size
    queries = b * s_q
    lengths = torch.tensor(list(seq_tokens), dtype=torch.long, device=device)
    lengths = lengths.repeat_interleave(s_q)  # [queries]
    span = max(max(seq_tokens, default=0), 1)
    picks = min(topk, span)
    keys = torch.rand(queries, span, generator=gen, device=device)
    keys.masked_fill_(torch.arange(span, device=device) >= lengths[:, None], 2.0)
    positions = keys.topk(picks, dim=1, largest=False, sorted=False).indices  # [queries, picks]
    owned = positions < lengths[:, None]
    seq_of = torch.arange(b, device=device).repeat_interleave(s_q)
    pos = torch.where(owned, positions, 0)
    blocks = table.to(device)[seq_of[:, None], pos // page]
    idx = torch.where(owned, blocks * page + pos % page, -1)
    if picks < topk:
        idx = torch.cat([idx, idx.new_full((queries, topk - picks), -1)], dim=1)

    fillers = torch.tensor(_invalid_fillers(num_tokens), dtype=torch.long, device=device)
    idx = _spoil_and_shuffle(idx, fillers, spec.invalid_fraction, spec.all_invalid_fraction, gen)
    return idx.view(b, s_q, topk)


def _allocate_cache(
    layout: str, d_qk: int, num_blocks: int, spec: SparseSourceSpec, uint8: bool, device
) -> tuple[torch.Tensor, torch.Tensor]:
    """(storage filled with NaN bytes, the kernel's view of the cache into it)."""
    page, gap = spec.page_block_size, spec.block_gap
    if layout == "bf16":
        storage = torch.full(
            (num_blocks, page + gap, 1, d_qk + spec.token_pad),
            math.nan,
            dtype=torch.bfloat16,
            device=device,
        )
        return storage, storage[:, :page, :, :d_qk]
    if layout == "v32":
        storage = torch.full(
            (num_blocks, page + gap, 1, 656 + spec.token_pad),
            _NAN_BYTE,
            dtype=torch.uint8,
            device=device,
        )
        view = storage[:, :page, :, :656]
    else:
        block_bytes = page * (_MODEL1_ROW_BYTES + _MODEL1_SCALE_BYTES)
        padded = -(-block_bytes // _MODEL1_BLOCK_ALIGN) * _MODEL1_BLOCK_ALIGN
        storage = torch.full(
            (num_blocks, padded + gap * _MODEL1_BLOCK_ALIGN),
            _NAN_BYTE,
            dtype=torch.uint8,
            device=device,
        )
        view = storage[:, :block_bytes].view(num_blocks, page, 1, 584)
    return storage, view if uint8 else view.view(torch.float8_e4m3fn)


def _cache_bytes(cache: SparseCache) -> torch.Tensor:
    return cache.k_cache if cache.k_cache.dtype == torch.uint8 else cache.k_cache.view(torch.uint8)


def _write_values_(cache: SparseCache, gen: torch.Generator, max_chunk_bytes: int = 256 << 20):
    """Fills every token row with fresh random values (quantized for the FP8 layouts), a few
    blocks at a time, and stores what the reference reads in ref_cache."""
    num_blocks, page, d = cache.num_blocks, cache.page_block_size, cache.d_qk
    step = max(1, max_chunk_bytes // (page * d * 4))
    for b0 in range(0, num_blocks, step):
        b1 = min(b0 + step, num_blocks)
        src = torch.empty(b1 - b0, page, 1, d, dtype=torch.float32, device=cache.k_cache.device)
        _random_(src, cache.value_scale, cache.value_clamp, gen)
        src = src.to(torch.bfloat16)
        if cache.layout == "bf16":
            cache.k_cache[b0:b1] = src  # ref_cache is this same view
            continue
        from flash_mla.kv_cache import dequantize_k_cache, quantize_k_cache

        quant = quantize_k_cache(src, cache.layout)
        qbytes = quant if quant.dtype == torch.uint8 else quant.view(torch.uint8)
        if cache.layout == "v32":
            _cache_bytes(cache)[b0:b1] = qbytes
        else:
            # FlashMLA's MODEL1 view: element (block, r, 0, c) is byte r * 584 + c of the block.
            if tuple(qbytes.shape) != (b1 - b0, page, 1, 584) or (
                page > 1 and qbytes.stride(1) != 584
            ):
                raise AssertionError(
                    f"quantize_k_cache(model1) returned shape {tuple(qbytes.shape)} strides "
                    f"{qbytes.stride()}, expected the [blocks, page, 1, 584] view of whole blocks"
                )
            block_bytes = page * 584
            cache.storage[b0:b1, :block_bytes] = qbytes.reshape(b1 - b0, block_bytes)
        cache.ref_cache[b0:b1] = dequantize_k_cache(quant, cache.layout).reshape(
            b1 - b0, page, 1, d
        )


def _counted_entries(
    idx: torch.Tensor, num_tokens: int, lengths: Optional[torch.Tensor] = None
) -> torch.Tensor:
    """Bool, shape of idx [n, ..., topk]: the entries that count, 0 <= index < num_tokens at a
    position below lengths[n] (when given; a negative length counts nothing)."""
    idx = idx.long()
    counted = (idx >= 0) & (idx < num_tokens)
    if lengths is not None:
        positions = torch.arange(idx.shape[-1], device=idx.device)
        limits = lengths.to(idx.device).long().view(-1, *([1] * (idx.dim() - 1)))
        counted &= positions < limits
    return counted


def _counted_rows(cache: SparseCache) -> torch.Tensor:
    """[num_blocks, page] bool: the rows some counted entry (valid, within topk_length) names."""
    num_tokens = cache.num_blocks * cache.page_block_size
    idx = cache.indices.long()
    counted = _counted_entries(idx, num_tokens, cache.topk_length)
    used = torch.zeros(num_tokens, dtype=torch.bool, device=idx.device)
    used[idx[counted]] = True
    return used.view(cache.num_blocks, cache.page_block_size)


def _poison_unused_(cache: SparseCache) -> None:
    """NaN in every row no counted entry names: in the kernel's bytes and in ref_cache."""
    unused = ~_counted_rows(cache).to(cache.k_cache.device)
    if cache.layout == "bf16":
        cache.k_cache[unused] = math.nan
        return
    if cache.layout == "v32":
        _cache_bytes(cache)[unused] = _NAN_BYTE
    else:
        page, num_blocks = cache.page_block_size, cache.num_blocks
        data = cache.storage[:, : page * _MODEL1_ROW_BYTES].view(
            num_blocks, page, _MODEL1_ROW_BYTES
        )
        scales = cache.storage[:, page * _MODEL1_ROW_BYTES : page * 584].view(
            num_blocks, page, _MODEL1_SCALE_BYTES
        )
        data[unused] = _NAN_BYTE
        scales[unused] = _NAN_BYTE
    cache.ref_cache[unused] = math.nan


def make_sparse_cache(
    spec: SparseSourceSpec,
    *,
    b: int,
    s_q: int,
    layout,
    d_qk: Optional[int] = None,
    device: torch.device | str = "cuda",
    uint8: bool = False,
    value_scale: float = 1.0,
    value_clamp: Optional[float] = None,
    poison_unused: bool = True,
    seed: int = 0,
) -> SparseCache:
    """Builds one token source of a sparse case.

    Every sequence owns spec.seq_tokens[i] tokens on randomly permuted pages of the cache; each
    query token's index list names distinct tokens of its own sequence in random order (as many
    as it owns, at most topk), the rest -1, and spec.invalid_fraction of the entries replaced by
    -1 or out-of-range values. Values are N(0, value_scale^2) (clamped to +-value_clamp),
    quantized with flash_mla.kv_cache.quantize_k_cache for the FP8 layouts. With poison_unused,
    every row that no counted entry names (unowned pages, tokens not picked, tokens named only
    past topk_length) holds NaN bytes, and so do the gaps between blocks and rows.
    """
    layout = _layout_name(layout)
    fixed_d, _ = SPARSE_LAYOUTS[layout]
    d_qk = fixed_d if fixed_d is not None else (d_qk or 576)
    if fixed_d is not None and d_qk != fixed_d:
        raise ValueError(f"layout {layout} stores head_dim {fixed_d}, got d_qk {d_qk}")
    device = torch.device(device)
    rng = torch.Generator().manual_seed(seed)
    if spec.seq_tokens is None:
        lo, hi = spec.topk // 2 + 1, 2 * spec.topk
        seq_tokens = torch.randint(lo, hi + 1, (b,), generator=rng).tolist()
    else:
        seq_tokens = [int(n) for n in spec.seq_tokens]
        if len(seq_tokens) != b:
            raise ValueError(f"seq_tokens has {len(seq_tokens)} entries for batch {b}")
    page = spec.page_block_size
    pages = [-(-n // page) for n in seq_tokens]
    num_blocks = max(sum(pages) + spec.spare_blocks, 1)
    perm = torch.randperm(num_blocks, generator=rng)
    table = torch.zeros(b, max(max(pages, default=0), 1), dtype=torch.long)
    start = 0
    for i, count in enumerate(pages):
        table[i, :count] = perm[start : start + count]
        start += count

    gen = torch.Generator(device=device).manual_seed(seed + 1)
    num_tokens = num_blocks * page
    idx = _draw_indices(spec, seq_tokens, table, num_tokens, s_q, gen, device).to(torch.int32)
    if spec.indices_pad:
        buffer = torch.full(
            (b, s_q, spec.topk + spec.indices_pad), 7, dtype=torch.int32, device=device
        )
        buffer[..., : spec.topk] = idx
        idx = buffer[..., : spec.topk]
    topk_length = None
    if spec.topk_length is not None:
        topk_length = torch.tensor(list(spec.topk_length), dtype=torch.int32, device=device)

    storage, k_cache = _allocate_cache(layout, d_qk, num_blocks, spec, uint8, device)
    if layout == "bf16":
        ref_cache = k_cache
    else:
        ref_cache = torch.empty(num_blocks, page, 1, d_qk, dtype=torch.bfloat16, device=device)
    cache = SparseCache(
        layout=layout,
        d_qk=d_qk,
        k_cache=k_cache,
        ref_cache=ref_cache,
        indices=idx,
        topk_length=topk_length,
        seq_tokens=seq_tokens,
        storage=storage,
        value_scale=value_scale,
        value_clamp=value_clamp,
        poison_unused=poison_unused,
    )
    _write_values_(cache, gen)
    if poison_unused:
        _poison_unused_(cache)
    return cache


def make_attn_sink(
    h_q: int, mode: str, typical_lse: float, *, device="cuda", seed: int = 0
) -> Optional[torch.Tensor]:
    """attn_sink for a case: mode "none" (None), "finite" (around typical_lse, where the sink
    factor matters), "mixed" (finite, +inf and -inf heads), "+inf" or "-inf" (every head),
    "flashmla" (as FlashMLA's tests draw it: N(0, 1), with -inf where a second N(0, 1) draw is
    below -0.5 and +inf where it is above 0.5; typical_lse is not used)."""
    if mode == "none":
        return None
    if mode in ("+inf", "-inf"):
        return torch.full((h_q,), float(mode), dtype=torch.float32, device=device)
    gen = torch.Generator().manual_seed(seed)
    if mode == "flashmla":
        sink = torch.randn(h_q, generator=gen, dtype=torch.float32)
        mask = torch.randn(h_q, generator=gen, dtype=torch.float32)
        sink[mask < -0.5] = -math.inf
        sink[mask > 0.5] = math.inf
        return sink.to(device)
    sink = typical_lse + 2.0 * torch.randn(h_q, generator=gen, dtype=torch.float32)
    if mode == "mixed":
        kind = torch.randint(0, 4, (h_q,), generator=gen)
        if h_q >= 3:
            kind[:2] = torch.tensor([0, 1])  # at least one +inf and one -inf head
        sink[kind == 0] = math.inf
        sink[kind == 1] = -math.inf
    elif mode != "finite":
        raise ValueError(f"unknown attn_sink mode {mode!r}")
    return sink.to(device)


def make_sparse_decode_inputs(
    main: SparseSourceSpec,
    *,
    b: int,
    s_q: int,
    h_q: int,
    layout,
    d_qk: Optional[int] = None,
    extra: Optional[SparseSourceSpec] = None,
    sink: str = "none",
    uint8: bool = False,
    q_pad: int = 0,
    value_scale: float = 1.0,
    value_clamp: Optional[float] = None,
    poison_unused: bool = True,
    device: torch.device | str = "cuda",
    seed: int = 0,
) -> SparseDecodeInputs:
    """Builds a sparse decode batch: q [b, s_q, h_q, d_qk] bfloat16 (a view with q_pad NaN
    columns after each row when q_pad > 0), the main token source, the optional extra one (same
    layout) and attn_sink (see make_attn_sink). Layouts: "v32" (FP8, d_qk 576), "model1" (FP8,
    d_qk 512), "bf16" (d_qk 576 or 512)."""
    layout = _layout_name(layout)
    common = dict(
        b=b,
        s_q=s_q,
        layout=layout,
        d_qk=d_qk,
        device=device,
        uint8=uint8,
        value_scale=value_scale,
        value_clamp=value_clamp,
        poison_unused=poison_unused,
    )
    main_cache = make_sparse_cache(main, seed=seed, **common)
    extra_cache = None if extra is None else make_sparse_cache(extra, seed=seed + 7919, **common)
    d = main_cache.d_qk
    q_buf = torch.full((b, s_q, h_q, d + q_pad), math.nan, dtype=torch.bfloat16, device=device)
    q = q_buf[..., :d]
    topk_total = main.topk + (0 if extra is None else extra.topk)
    inputs = SparseDecodeInputs(
        q=q,
        main=main_cache,
        extra=extra_cache,
        attn_sink=make_attn_sink(
            h_q, sink, math.log(topk_total) + 0.5 * value_scale**2, device=device, seed=seed
        ),
        is_fp8_kvcache=layout != "bf16",
        cache_seqlens=torch.tensor(main_cache.seq_tokens, dtype=torch.int32, device=device),
        value_scale=value_scale,
        value_clamp=value_clamp,
    )
    gen = torch.Generator(device=q.device).manual_seed(seed + 2)
    _random_(inputs.q, value_scale, value_clamp, gen)
    return inputs


def refill_sparse_(
    inputs: SparseDecodeInputs,
    *,
    seed: int = 1,
    topk_length: Optional[Sequence[int]] = None,
    extra_topk_length: Optional[Sequence[int]] = None,
) -> None:
    """Writes new random values into q and both caches in place (same storage, same indices, as
    a CUDA graph needs), optionally new topk_length / extra_topk_length values into the existing
    tensors; rows no counted entry names become NaN again."""
    gen = torch.Generator(device=inputs.q.device).manual_seed(seed)
    _random_(inputs.q, inputs.value_scale, inputs.value_clamp, gen)
    for cache, lengths in ((inputs.main, topk_length), (inputs.extra, extra_topk_length)):
        if cache is None:
            if lengths is not None:
                raise ValueError("extra_topk_length given for a batch without an extra cache")
            continue
        if lengths is not None:
            if cache.topk_length is None:
                raise ValueError("new lengths for a source built without a topk_length tensor")
            cache.topk_length.copy_(torch.tensor(list(lengths), dtype=torch.int32))
        _write_values_(cache, gen)
        if cache.poison_unused:
            _poison_unused_(cache)


def reference_for(
    inputs: SparseDecodeInputs,
    head_dim_v: int = 512,
    *,
    softmax_scale: Optional[float] = None,
    batch_indices: Optional[Sequence[int]] = None,
    return_error_scales: bool = True,
):
    """reference_sparse_decode of a SparseDecodeInputs batch."""
    extra = inputs.extra
    return reference_sparse_decode(
        inputs.q,
        inputs.main.ref_cache,
        inputs.main.indices,
        inputs.main.topk_length,
        inputs.attn_sink,
        None if extra is None else extra.ref_cache,
        None if extra is None else extra.indices,
        None if extra is None else extra.topk_length,
        softmax_scale=softmax_scale,
        head_dim_v=head_dim_v,
        batch_indices=batch_indices,
        return_error_scales=return_error_scales,
    )


def check_sparse_decode_against_reference(
    inputs: SparseDecodeInputs,
    out: torch.Tensor,
    lse: torch.Tensor,
    head_dim_v: int = 512,
    *,
    softmax_scale: Optional[float] = None,
    batch_indices: Optional[Sequence[int]] = None,
) -> dict[str, int]:
    """Computes the float64 reference of `inputs` (for `batch_indices`, all by default) and
    checks `out`/`lse` (already restricted to those sequences) against it with the sparse
    tolerances and the rounding bounds of check_decode. A query without a counted token must
    give exactly out = 0 (and lse = +inf, which check_close's inf-position rule enforces)."""
    ref_out, ref_lse, out_abs, logit_scale = reference_for(
        inputs, head_dim_v, softmax_scale=softmax_scale, batch_indices=batch_indices
    )
    empty = (ref_lse == math.inf).transpose(1, 2)  # [n, s_q, h_q]
    _check_zero_where_empty(
        out.to(ref_out.device), empty, "out", "queries without a counted token"
    )
    return check_decode(
        out,
        lse,
        ref_out,
        ref_lse,
        out_abs,
        logit_scale,
        out_tol=SPARSE_OUT_TOL,
        lse_tol=SPARSE_LSE_TOL,
    )


def sparse_counted_entries(cache: SparseCache) -> int:
    """How many index entries count (valid and within topk_length), over all query tokens."""
    num_tokens = cache.num_blocks * cache.page_block_size
    return int(_counted_entries(cache.indices, num_tokens, cache.topk_length).sum())


def sparse_retrieved_tokens(cache: SparseCache) -> int:
    """How many distinct cache rows the counted entries name (each is read once at best)."""
    return int(_counted_rows(cache).sum())


# ---- Sparse prefill (spec section 3) -----------------------------------------------------------

# FlashMLA's tolerances for its sparse prefill test; max_logits has the same as lse.
SPARSE_PREFILL_OUT_TOL = Tolerance(abs_tol=8e-4, rel_tol=3.01 / 128, cos_tol=7e-6)
SPARSE_PREFILL_LSE_TOL = Tolerance(abs_tol=1e-6, rel_tol=2.01 / 65536)


@dataclasses.dataclass
class SparsePrefillInputs:
    """One sparse prefill call (see make_sparse_prefill_inputs)."""

    q: torch.Tensor  # [s_q, h_q, d_qk] bfloat16 (maybe a strided view)
    kv: torch.Tensor  # [s_kv, 1, d_qk] bfloat16, a view into kv_storage
    indices: torch.Tensor  # [s_q, 1, topk] int32 (maybe a strided view)
    sm_scale: float
    attn_sink: Optional[torch.Tensor]  # [h_q] float32
    topk_length: Optional[torch.Tensor]  # [s_q] int32
    # The allocation kv views: one NaN token row before and after it (an index of -1 or s_kv
    # that the kernel failed to skip reads NaN), and NaN in the gaps of a strided layout.
    kv_storage: torch.Tensor
    d_v: int = 512
    value_scale: float = 1.0
    value_offset: float = 0.0
    value_clamp: Optional[float] = None
    poison_unused: bool = True

    @property
    def s_q(self) -> int:
        return self.q.shape[0]

    @property
    def h_q(self) -> int:
        return self.q.shape[1]

    @property
    def d_qk(self) -> int:
        return self.q.shape[2]

    @property
    def s_kv(self) -> int:
        return self.kv.shape[0]

    @property
    def topk(self) -> int:
        return self.indices.shape[-1]

    def args(self) -> tuple:
        """The positional arguments of flash_mla_sparse_fwd: (q, kv, indices, sm_scale)."""
        return self.q, self.kv, self.indices, self.sm_scale

    def kwargs(self) -> dict:
        """The keyword arguments of flash_mla_sparse_fwd: d_v, attn_sink, topk_length."""
        return dict(d_v=self.d_v, attn_sink=self.attn_sink, topk_length=self.topk_length)


def _draw_prefill_indices(
    s_q: int,
    s_kv: int,
    topk: int,
    gen: torch.Generator,
    device: torch.device,
    *,
    invalid_fraction: float,
    all_invalid_fraction: float,
    duplicates: bool,
    max_chunk_elements: int = 1 << 26,
) -> torch.Tensor:
    """[s_q, topk] int32. Each query token names min(topk, s_kv) distinct random tokens of
    [0, s_kv) in random order, the rest of its row invalid (as FlashMLA's _randperm_batch does);
    with `duplicates`, topk tokens drawn with replacement instead. Then `invalid_fraction` of the
    entries and every entry of `all_invalid_fraction` of the rows become invalid (-1 mostly,
    else < 0 or >= s_kv)."""
    fillers = torch.tensor(_invalid_fillers(s_kv), dtype=torch.long, device=device)
    out = torch.empty(s_q, topk, dtype=torch.int32, device=device)
    picks = min(topk, s_kv)
    step = max(1, max_chunk_elements // max(s_kv, topk, 1))
    for r0 in range(0, s_q, step):
        r1 = min(r0 + step, s_q)
        m = r1 - r0
        if duplicates:
            idx = torch.randint(0, s_kv, (m, topk), generator=gen, device=device)
        else:
            keys = torch.rand(m, s_kv, generator=gen, device=device)
            idx = keys.topk(picks, dim=1, sorted=False).indices
            del keys
            if picks < topk:
                idx = torch.cat([idx, _random_fillers(fillers, (m, topk - picks), gen)], dim=1)
        idx = _spoil_and_shuffle(idx, fillers, invalid_fraction, all_invalid_fraction, gen)
        out[r0:r1] = idx.to(torch.int32)
    return out


def _draw_topk_length(s_q: int, topk: int, gen: torch.Generator) -> torch.Tensor:
    """[s_q] int32 on the CPU: mostly uniform in [0, topk], some 0, topk, topk - 1, past topk
    (no effect) and negative (no entry counts)."""
    lengths = torch.randint(0, topk + 1, (s_q,), generator=gen)
    special = torch.tensor([0, topk, max(topk - 1, 0), topk + 5, -1], dtype=torch.long)
    pick = torch.rand(s_q, generator=gen) < 0.2
    chosen = special[torch.randint(0, len(special), (s_q,), generator=gen)]
    return torch.where(pick, chosen, lengths).to(torch.int32)


def sparse_prefill_counted(
    indices: torch.Tensor, s_kv: int, topk_length: Optional[torch.Tensor] = None
) -> torch.Tensor:
    """[s_q, topk] bool: the entries of indices [s_q, 1, topk] (or [s_q, topk]) that count:
    0 <= index < s_kv at a position below topk_length (when given)."""
    idx = indices.reshape(indices.shape[0], indices.shape[-1])
    return _counted_entries(idx, s_kv, topk_length)


def _fill_prefill_values_(inputs: SparsePrefillInputs, gen: torch.Generator) -> None:
    for t in (inputs.q, inputs.kv):
        t.normal_(inputs.value_offset, inputs.value_scale, generator=gen)
        if inputs.value_clamp is not None:
            t.clamp_(-inputs.value_clamp, inputs.value_clamp)


def _poison_prefill_unused_(inputs: SparsePrefillInputs) -> None:
    """NaN in every kv row that no counted entry names."""
    counted = sparse_prefill_counted(inputs.indices, inputs.s_kv, inputs.topk_length)
    idx = inputs.indices.reshape(inputs.s_q, inputs.topk).long()
    used = torch.zeros(inputs.s_kv, dtype=torch.bool, device=idx.device)
    used[idx[counted]] = True
    inputs.kv[~used.to(inputs.kv.device)] = math.nan


def make_sparse_prefill_inputs(
    s_q: int,
    s_kv: int,
    topk: int,
    *,
    h_q: int,
    d_qk: int,
    d_v: int = 512,
    sm_scale: Optional[float] = None,
    invalid_fraction: float = 0.0,
    all_invalid_fraction: float = 0.0,
    duplicates: bool = False,
    topk_length=None,
    sink: str = "none",
    poison_unused: bool = True,
    strided: bool = False,
    value_scale: float = 1.0,
    value_offset: float = 0.0,
    value_clamp: Optional[float] = None,
    device: torch.device | str = "cuda",
    seed: int = 0,
) -> SparsePrefillInputs:
    """Builds a sparse prefill call.

    q [s_q, h_q, d_qk] and kv [s_kv, 1, d_qk] bfloat16 hold N(value_offset, value_scale^2)
    values (clamped to +-value_clamp if given); sm_scale defaults to d_qk ** -0.5. indices
    [s_q, 1, topk] int32 come from _draw_prefill_indices (distinct random tokens per query token,
    padded with invalid entries where s_kv < topk, plus the requested invalid entries and rows).
    topk_length: None (no tensor), "random" (see _draw_topk_length) or s_q values. sink: a mode
    of make_attn_sink. With poison_unused, every kv row that no counted entry names is NaN
    (kv always has a NaN row just before and just after it in its storage). With strided, q, kv
    and indices are views into larger buffers as FlashMLA's tests make them (every dimension one
    longer, the last 128 longer), the gaps NaN (indices: 0).
    """
    device = torch.device(device)
    gen = torch.Generator(device=device).manual_seed(seed)
    cpu_gen = torch.Generator().manual_seed(seed + 1)
    nan = math.nan
    if strided:
        q_buf = torch.full((s_q + 1, h_q + 1, d_qk + 128), nan, dtype=torch.bfloat16, device=device)
        q = q_buf[:s_q, :h_q, :d_qk]
        kv_storage = torch.full((s_kv + 2, 2, d_qk + 128), nan, dtype=torch.bfloat16, device=device)
        kv = kv_storage[1 : s_kv + 1, :1, :d_qk]
        idx_buf = torch.zeros((s_q + 1, 2, topk + 128), dtype=torch.int32, device=device)
        indices = idx_buf[:s_q, :1, :topk]
    else:
        q = torch.empty((s_q, h_q, d_qk), dtype=torch.bfloat16, device=device)
        kv_storage = torch.full((s_kv + 2, 1, d_qk), nan, dtype=torch.bfloat16, device=device)
        kv = kv_storage[1 : s_kv + 1]
        indices = torch.empty((s_q, 1, topk), dtype=torch.int32, device=device)
    indices[:, 0] = _draw_prefill_indices(
        s_q,
        s_kv,
        topk,
        gen,
        device,
        invalid_fraction=invalid_fraction,
        all_invalid_fraction=all_invalid_fraction,
        duplicates=duplicates,
    )
    lengths = None
    if isinstance(topk_length, str):
        if topk_length != "random":
            raise ValueError(f"topk_length must be None, 'random' or values, got {topk_length!r}")
        lengths = _draw_topk_length(s_q, topk, cpu_gen).to(device)
    elif topk_length is not None:
        lengths = torch.tensor(list(topk_length), dtype=torch.int32, device=device)
        if lengths.shape != (s_q,):
            raise ValueError(f"topk_length has {lengths.numel()} values for s_q {s_q}")
    scale = d_qk ** (-0.5) if sm_scale is None else float(sm_scale)
    # Logits are about N(0, scale^2 * d_qk * value_scale^4): a sink near the typical lse matters.
    typical_lse = math.log(max(min(topk, s_kv), 1)) + 0.5 * scale**2 * d_qk * value_scale**4
    inputs = SparsePrefillInputs(
        q=q,
        kv=kv,
        indices=indices,
        sm_scale=scale,
        attn_sink=make_attn_sink(h_q, sink, typical_lse, device=device, seed=seed + 2),
        topk_length=lengths,
        kv_storage=kv_storage,
        d_v=d_v,
        value_scale=value_scale,
        value_offset=value_offset,
        value_clamp=value_clamp,
        poison_unused=poison_unused,
    )
    _fill_prefill_values_(inputs, gen)
    if poison_unused:
        _poison_prefill_unused_(inputs)
    return inputs


def refill_sparse_prefill_(
    inputs: SparsePrefillInputs, *, seed: int = 1, topk_length: Optional[Sequence[int]] = None
) -> None:
    """Writes new random values into q and kv in place (same storage and indices, as a CUDA
    graph needs), optionally new values into the existing topk_length tensor; kv rows no
    counted entry names become NaN again."""
    if topk_length is not None:
        if inputs.topk_length is None:
            raise ValueError("new topk_length values for inputs built without a topk_length")
        inputs.topk_length.copy_(torch.tensor(list(topk_length), dtype=torch.int32))
    _fill_prefill_values_(inputs, torch.Generator(device=inputs.q.device).manual_seed(seed))
    if inputs.poison_unused:
        _poison_prefill_unused_(inputs)


def _prefill_reference_chunks(
    q: torch.Tensor,
    kv: torch.Tensor,
    indices: torch.Tensor,
    sm_scale: Optional[float],
    d_v: int,
    attn_sink: Optional[torch.Tensor],
    topk_length: Optional[torch.Tensor],
    rows: Optional[torch.Tensor],
    compute_dtype: torch.dtype,
    error_scales: bool,
    max_chunk_bytes: int,
):
    """Yields (row ids [m] long, {out, max_logits, lse[, out_abs, logit_scale]}) in
    compute_dtype for consecutive chunks of the query tokens `rows` (all by default), sized so
    that one chunk's temporaries stay near max_chunk_bytes. Only the kv rows of counted entries
    are read; each row's counted entries are moved to its front first, so a chunk gathers only
    as many columns as its fullest row counts."""
    s_q, h_q, d_qk = q.shape
    s_kv = kv.shape[0]
    device = q.device
    scale = d_qk ** (-0.5) if sm_scale is None else float(sm_scale)
    kv2d = kv.reshape(s_kv, kv.shape[-1]) if kv.dim() == 3 else kv
    row_ids = (
        torch.arange(s_q, device=device)
        if rows is None
        else torch.as_tensor(rows, dtype=torch.long).to(device).reshape(-1)
    )
    n = row_ids.numel()
    if n == 0:
        return
    idx_all = indices.reshape(s_q, indices.shape[-1])
    lengths = None if topk_length is None else topk_length.to(device)
    sink = None if attn_sink is None else attn_sink.to(device=device, dtype=compute_dtype)
    counted_all = sparse_prefill_counted(
        idx_all.to(device)[row_ids], s_kv, None if lengths is None else lengths[row_ids]
    )
    cols_max = max(int(counted_all.sum(dim=1).max()), 1)
    del counted_all
    itemsize = torch.empty((), dtype=compute_dtype).element_size()
    per_row = itemsize * (cols_max * (d_qk + 5 * h_q) + 6 * h_q * d_v)
    step = max(1, max_chunk_bytes // per_row)
    for start in range(0, n, step):
        r = row_ids[start : start + step]
        m = r.numel()
        idx = idx_all.to(device)[r].long()
        counted = sparse_prefill_counted(idx, s_kv, None if lengths is None else lengths[r])
        cols = max(int(counted.sum(dim=1).max()), 1)
        order = torch.argsort((~counted).to(torch.uint8), dim=1, stable=True)[:, :cols]
        idx, counted = idx.gather(1, order), counted.gather(1, order)
        kvg = torch.zeros(m, cols, d_qk, dtype=compute_dtype, device=device)
        where = counted.nonzero(as_tuple=True)
        kvg[where] = kv2d[idx[where].to(kv2d.device)].to(device=device, dtype=compute_dtype)
        not_counted = ~counted[:, None, :]  # [m, 1, cols]
        qc = q[r.to(q.device)].to(device=device, dtype=compute_dtype)  # [m, h_q, d_qk]
        logits = torch.bmm(qc, kvg.transpose(1, 2)).mul_(scale).masked_fill_(not_counted, -math.inf)
        max_logits = logits.amax(dim=-1)  # -inf without a counted entry
        row_lse, attends, weights = _softmax_weights(logits, sink)
        values = kvg[..., :d_v]
        result = {
            "out": torch.bmm(weights, values),
            "max_logits": max_logits,
            "lse": torch.where(attends, row_lse, math.inf),
        }
        if error_scales:
            result["out_abs"] = torch.bmm(weights, values.abs())
            del weights
            result["logit_scale"] = _gathered_logit_scale(
                qc, kvg, logits, not_counted, abs(scale)
            )
        yield r, result


@torch.no_grad()
def reference_sparse_prefill(
    q: torch.Tensor,
    kv: torch.Tensor,
    indices: torch.Tensor,
    sm_scale: Optional[float] = None,
    d_v: int = 512,
    attn_sink: Optional[torch.Tensor] = None,
    topk_length: Optional[torch.Tensor] = None,
    *,
    rows: Optional[Sequence[int] | torch.Tensor] = None,
    compute_dtype: torch.dtype = torch.float64,
    return_error_scales: bool = False,
    max_chunk_bytes: int = 512 << 20,
):
    """Sparse MLA prefill in plain PyTorch (spec section 3, flashmla/sparse_prefill.h).

    q [s_q, h_q, d_qk], kv [s_kv, 1, d_qk] (or [s_kv, d_qk]), indices [s_q, 1, topk] (or
    [s_q, topk]). Entry j of query token s counts when 0 <= indices[s, j] < s_kv and
    j < topk_length[s] (when given; a negative length counts nothing); a token listed twice
    counts twice. Only the kv rows of counted entries are read, so NaN anywhere else never
    reaches the result. Computes in compute_dtype, in chunks of query tokens.

    Returns, for the query tokens `rows` (all by default; n of them), out [n, h_q, d_v],
    max_logits [n, h_q] and lse [n, h_q], all float32: max_logits is the largest scaled logit
    (-inf without a counted entry), lse the natural log-sum-exp (+inf without a counted entry,
    and out = 0 there); with attn_sink, out is scaled by exp(lse) / (exp(lse) + exp(sink[h]))
    and lse / max_logits are not. With return_error_scales, also out_abs = sum_t w_t |v_t| (w_t
    the weight out gives v_t, the sink factor included; layout of out) and logit_scale [n, h_q]
    (see _prefill_reference_chunks): the scales of the rounding the kernel cannot avoid (see
    check_sparse_prefill).
    """
    s_q, h_q, _ = q.shape
    device = q.device
    n = s_q if rows is None else len(rows)
    out = torch.zeros(n, h_q, d_v, dtype=torch.float32, device=device)
    max_logits = torch.full((n, h_q), -math.inf, dtype=torch.float32, device=device)
    lse = torch.full((n, h_q), math.inf, dtype=torch.float32, device=device)
    out_abs = torch.zeros_like(out) if return_error_scales else None
    logit_scale = torch.zeros_like(lse) if return_error_scales else None
    start = 0
    for r, res in _prefill_reference_chunks(
        q,
        kv,
        indices,
        sm_scale,
        d_v,
        attn_sink,
        topk_length,
        None if rows is None else torch.as_tensor(rows, dtype=torch.long),
        compute_dtype,
        return_error_scales,
        max_chunk_bytes,
    ):
        stop = start + r.numel()
        out[start:stop] = res["out"].float()
        max_logits[start:stop] = res["max_logits"].float()
        lse[start:stop] = res["lse"].float()
        if return_error_scales:
            out_abs[start:stop] = res["out_abs"].float()
            logit_scale[start:stop] = res["logit_scale"].float()
        start = stop
    if return_error_scales:
        return out, max_logits, lse, out_abs, logit_scale
    return out, max_logits, lse


@torch.no_grad()
def check_sparse_prefill(
    q: torch.Tensor,
    kv: torch.Tensor,
    indices: torch.Tensor,
    sm_scale: Optional[float],
    out: torch.Tensor,
    max_logits: torch.Tensor,
    lse: torch.Tensor,
    *,
    d_v: int = 512,
    attn_sink: Optional[torch.Tensor] = None,
    topk_length: Optional[torch.Tensor] = None,
    rows: Optional[Sequence[int] | torch.Tensor] = None,
    out_tol: Tolerance = SPARSE_PREFILL_OUT_TOL,
    lse_tol: Tolerance = SPARSE_PREFILL_LSE_TOL,
    max_chunk_bytes: int = 512 << 20,
) -> dict[str, int]:
    """Checks flash_mla_sparse_fwd's (out, max_logits, lse) for the call (q, kv, indices,
    sm_scale, d_v, attn_sink, topk_length) against the float64 reference, on the query tokens
    `rows` (all by default), chunk by chunk (the cosine similarity of out is over all of them).

    Tolerances (FlashMLA's sparse prefill test): out |err| < 8e-4 or |err|/|ref| < 3.01/128
    element by element (against the reference rounded to bfloat16) and 1 - cos < 7e-6;
    max_logits and lse |err| < 1e-6 or |err|/|ref| < 2.01/65536; inf and NaN at identical
    positions. Plus the rounding-aware bounds of check_decode (docs/testing.md): out may be off
    by u * (sum_t w_t |v_t| + |ref|) (u = 2^-8: P is rounded to bfloat16 before P V), lse and
    max_logits by 2^-21 * (logit_scale + |ref|). A (token, head) without a counted entry must
    give exactly out = 0, max_logits = -inf and lse = +inf. Returns how many elements passed
    only by the rounding bounds (also added to ROUNDING_BOUND_STATS).
    """
    s_q, h_q, _ = q.shape
    expected = {
        "out": (out, (s_q, h_q, d_v), torch.bfloat16),
        "max_logits": (max_logits, (s_q, h_q), torch.float32),
        "lse": (lse, (s_q, h_q), torch.float32),
    }
    for name, (tensor, shape, dtype) in expected.items():
        if tuple(tensor.shape) != shape or tensor.dtype != dtype:
            raise AssertionError(
                f"{name}: expected shape {shape} {dtype}, got {tuple(tensor.shape)} {tensor.dtype}"
            )
    counts = {"out": 0, "max_logits": 0, "lse": 0}
    dot = squares = 0.0
    elements = 0
    for r, ref in _prefill_reference_chunks(
        q,
        kv,
        indices,
        sm_scale,
        d_v,
        attn_sink,
        topk_length,
        None if rows is None else torch.as_tensor(rows, dtype=torch.long),
        torch.float64,
        True,
        max_chunk_bytes,
    ):
        # Element indices in a message are positions within this chunk of query tokens.
        label = f"[chunk of query tokens {int(r[0])}..{int(r[-1])}]"
        a_out = out[r.to(out.device)].to(r.device)
        a_max = max_logits[r.to(max_logits.device)].to(r.device)
        a_lse = lse[r.to(lse.device)].to(r.device)
        empty = ref["lse"] == math.inf  # [m, h_q]
        _check_zero_where_empty(
            a_out, empty, f"out{label}", "(token, head) pairs without a valid index"
        )
        bound_out = _out_rounding_bound(out.dtype, ref["out_abs"], ref["out"])
        n, d, sq = check_close_elements(
            a_out, ref["out"].to(out.dtype), out_tol, name=f"out{label}", bound=bound_out
        )
        counts["out"] += n
        dot, squares, elements = dot + d, squares + sq, elements + a_out.numel()
        for name, actual in (("max_logits", a_max), ("lse", a_lse)):
            bound = _lse_rounding_bound(ref[name], ref["logit_scale"])
            counts[name] += check_close_elements(
                actual, ref[name].float(), lse_tol, name=f"{name}{label}", bound=bound
            )[0]
    check_cosine(dot, squares, out_tol, name="out")
    return _record_rounding_bound_counts(elements, counts)


def check_sparse_prefill_against_reference(
    inputs: SparsePrefillInputs,
    out: torch.Tensor,
    max_logits: torch.Tensor,
    lse: torch.Tensor,
    *,
    rows: Optional[Sequence[int] | torch.Tensor] = None,
    max_chunk_bytes: int = 512 << 20,
) -> dict[str, int]:
    """check_sparse_prefill of a SparsePrefillInputs call."""
    return check_sparse_prefill(
        inputs.q,
        inputs.kv,
        inputs.indices,
        inputs.sm_scale,
        out,
        max_logits,
        lse,
        d_v=inputs.d_v,
        attn_sink=inputs.attn_sink,
        topk_length=inputs.topk_length,
        rows=rows,
        max_chunk_bytes=max_chunk_bytes,
    )


def sparse_prefill_flops(s_q: int, h_q: int, topk: int, d_qk: int, d_v: int = 512) -> int:
    """FLOPs of a sparse prefill call as anchors.md counts them: s_q * h_q * topk * 2 *
    (d_qk + d_v) (every top-k entry, valid or not)."""
    return s_q * h_q * topk * 2 * (d_qk + d_v)
