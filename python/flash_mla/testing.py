"""Testing helpers: a PyTorch reference, the project's tolerances, and input generators.

Used by tests/python and bench/. The reference computes in float64 (inputs upcast), gathers each
sequence's pages through its block table and never reads rows past cache_seqlens, so NaN in
unused rows and garbage in unused block-table entries do not reach it.
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
    if tol.cos_tol is not None:
        denominator = (a * a + e * e).sum().item()
        cos_diff = 0.0 if denominator == 0 else 1.0 - 2.0 * (a * e).sum().item() / denominator
        if cos_diff >= tol.cos_tol:
            raise AssertionError(
                f"{name}: 1 - cosine similarity = {cos_diff:.3g} >= {tol.cos_tol:g}"
            )
    return by_bound_only


# Unit roundoff of the dtype P is rounded to before the P V tensor-core product.
UNIT_ROUNDOFF = {torch.bfloat16: 2.0**-8, torch.float16: 2.0**-11}
# lse inherits the float32 rounding of the largest logit and of the log of the row sum.
LSE_ROUNDING = 2.0**-21
# Totals over a test session of elements that passed only by the rounding bounds (printed by
# tests/python/conftest.py, so the numbers are seen, not hidden).
ROUNDING_BOUND_STATS = {"checks": 0, "out_elements": 0, "out_within_rounding_bound_only": 0,
                        "lse_within_rounding_bound_only": 0}


def check_decode(
    out: torch.Tensor,
    lse: torch.Tensor,
    ref_out: torch.Tensor,
    ref_lse: torch.Tensor,
    out_abs: Optional[torch.Tensor] = None,
    logit_scale: Optional[torch.Tensor] = None,
) -> dict[str, int]:
    """Checks a decode result against the reference with the project tolerances. The reference
    output is rounded to the dtype of `out` first, as the kernel's output is.

    With the error scales of reference_dense_decode(return_error_scales=True), an element that
    misses the fixed tolerance still passes when its error is within the rounding the
    arithmetic cannot avoid: P (the softmax weights w_t) is rounded to the input dtype before
    the tensor-core product, as in FlashMLA, so |err| <= u * (sum_t w_t |v_t| + |ref|) with u
    the dtype's unit roundoff; lse may be off by the float32 rounding of its terms,
    2^-21 * (logit_scale + |lse|). Returns how many elements passed only by those bounds.
    """
    bound_out = bound_lse = None
    if out_abs is not None:
        u = UNIT_ROUNDOFF[out.dtype]
        bound_out = u * (out_abs.double() + ref_out.double().abs())
    if logit_scale is not None:
        finite = ref_lse.isfinite()
        bound_lse = LSE_ROUNDING * torch.where(
            finite, logit_scale.double() + ref_lse.double().abs(), 0.0
        )
    n_out = check_close(out, ref_out.to(out.dtype), OUT_TOL, name="out", bound=bound_out)
    n_lse = check_close(lse, ref_lse, LSE_TOL, name="lse", bound=bound_lse)
    ROUNDING_BOUND_STATS["checks"] += 1
    ROUNDING_BOUND_STATS["out_elements"] += out.numel()
    ROUNDING_BOUND_STATS["out_within_rounding_bound_only"] += n_out
    ROUNDING_BOUND_STATS["lse_within_rounding_bound_only"] += n_lse
    return {"out_within_rounding_bound_only": n_out, "lse_within_rounding_bound_only": n_lse}


@torch.no_grad()
def reference_dense_decode(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    block_table: torch.Tensor,
    cache_seqlens: torch.Tensor,
    head_dim_v: int,
    softmax_scale: Optional[float] = None,
    causal: bool = False,
    batch_indices: Optional[Sequence[int]] = None,
    compute_dtype: torch.dtype = torch.float64,
    return_error_scales: bool = False,
):
    """Dense MLA decoding in plain PyTorch (spec section 1).

    Returns out [n, s_q, h_q, head_dim_v] and lse [n, h_q, s_q], both float32, for the n
    sequences of `batch_indices` (all by default). A query that attends to no token gets
    out = 0 and lse = +inf. With return_error_scales, also returns the scales that bound the
    kernel's inherent rounding error (see check_decode): out_abs = sum_t w_t |v_t| (layout of
    out) and logit_scale [n, h_q, s_q] = max |logit| + max sum_i |q_i k_i| * softmax_scale over
    the attended tokens (0 when none).
    """
    b, s_q, h_q, d_qk = q.shape
    page_block_size, h_kv = k_cache.shape[1], k_cache.shape[2]
    group = h_q // h_kv
    scale = d_qk ** (-0.5) if softmax_scale is None else softmax_scale
    lengths = cache_seqlens.tolist()
    table = block_table.cpu()
    rows = list(range(b)) if batch_indices is None else list(batch_indices)
    device = q.device

    out = torch.zeros(len(rows), s_q, h_q, head_dim_v, dtype=torch.float32, device=device)
    lse = torch.full((len(rows), h_q, s_q), math.inf, dtype=torch.float32, device=device)
    out_abs = torch.zeros_like(out) if return_error_scales else None
    logit_scale = torch.zeros_like(lse) if return_error_scales else None
    for row, i in enumerate(rows):
        n = int(lengths[i])
        if n <= 0:
            continue
        num_pages = (n + page_block_size - 1) // page_block_size
        pages = table[i, :num_pages].to(device=k_cache.device, dtype=torch.long)
        kv = k_cache[pages].reshape(num_pages * page_block_size, h_kv, d_qk)[:n]
        kv = kv.to(compute_dtype).permute(1, 0, 2)  # [h_kv, n, d_qk]
        # Query head h reads KV head h // group: rows of one KV head are (g, j) pairs.
        qi = q[i].to(compute_dtype).permute(1, 0, 2).reshape(h_kv, group * s_q, d_qk)
        logits = torch.bmm(qi, kv.transpose(1, 2)).mul_(scale).view(h_kv, group, s_q, n)
        if causal:
            t = torch.arange(n, device=device)
            last = n - s_q + torch.arange(s_q, device=device)  # query j sees t <= last[j]
            logits.masked_fill_(t[None, :] > last[:, None], -math.inf)
        row_lse = torch.logsumexp(logits, dim=-1)  # [h_kv, group, s_q]
        attends = row_lse.isfinite()
        probs = torch.exp(logits - torch.where(attends, row_lse, 0.0).unsqueeze(-1))
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
    checks `out`/`lse` (already restricted to those sequences) against it with check_decode."""
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


# Entries written into block-table slots that no token uses: out of range in both directions.
GARBAGE_BLOCK_IDS = (2**30, -1, 2**31 - 1, -(2**31))


@dataclasses.dataclass
class DecodeInputs:
    """One decode batch: q, a paged cache with randomly permuted pages and NaN in every row past
    a sequence's length, and a block table with garbage in the unused entries."""

    q: torch.Tensor  # [b, s_q, h_q, d_qk]
    k_cache: torch.Tensor  # [num_blocks, page_block_size, h_kv, d_qk]
    block_table: torch.Tensor  # [b, max_blocks] int32
    cache_seqlens: torch.Tensor  # [b] int32
    capacity: list[int]  # tokens each sequence's pages can hold
    value_scale: float = 1.0
    value_clamp: Optional[float] = None


def _random_(t: torch.Tensor, scale: float, clamp: Optional[float], gen: torch.Generator) -> None:
    t.normal_(0.0, scale, generator=gen)
    if clamp is not None:
        t.clamp_(-clamp, clamp)


def _mark_unused_rows_nan_(inputs: DecodeInputs, lengths: Sequence[int]) -> None:
    k_cache, table = inputs.k_cache, inputs.block_table.cpu()
    num_blocks, page = k_cache.shape[0], k_cache.shape[1]
    valid = torch.zeros(num_blocks, dtype=torch.long)
    for i, n in enumerate(lengths):
        full, rest = divmod(int(n), page)
        valid[table[i, :full].long()] = page
        if rest:
            valid[table[i, full].long()] = rest
    unused = torch.arange(page)[None, :] >= valid[:, None]  # [num_blocks, page]
    k_cache[unused.to(k_cache.device)] = float("nan")


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
) -> DecodeInputs:
    """Builds a decode batch for `seqlens`.

    Each sequence owns ceil(max(seqlen, capacity) / page_block_size) pages drawn from a random
    permutation of a pool of `num_blocks` pages (default: just enough, plus a few spares).
    Values are standard normal times `value_scale`, clamped to +-`value_clamp` if given.
    """
    b = len(seqlens)
    cap = [max(int(n), int(c)) for n, c in zip(seqlens, capacity or seqlens)]
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

    inputs = DecodeInputs(
        q=torch.empty(b, s_q, h_q, d_qk, dtype=dtype, device=device),
        k_cache=torch.empty(pool, page_block_size, h_kv, d_qk, dtype=dtype, device=device),
        block_table=table.to(dtype=torch.int32, device=device),
        cache_seqlens=torch.tensor(list(seqlens), dtype=torch.int32, device=device),
        capacity=cap,
        value_scale=value_scale,
        value_clamp=value_clamp,
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
