"""The FlashMLA-compatible Python API.

Names, arguments, defaults and return shapes follow DeepSeek's ``flash_mla.flash_mla_interface``
so that callers run unchanged. Both forms of ``get_mla_metadata`` are accepted:

* the older tensor form, ``get_mla_metadata(cache_seqlens, num_q_tokens_per_head_k, num_heads_k)``
  (dense) or ``get_mla_metadata(cache_seqlens, num_q_tokens_per_head_k, num_heads_k, num_heads_q,
  is_fp8_kvcache, topk)`` (sparse, when topk is given), plans right away and returns
  ``(tile_scheduler_metadata, num_splits)`` int32 tensors that are passed back to
  ``flash_mla_with_kvcache``;
* the newer form, ``get_mla_metadata()``, returns ``(FlashMLASchedMeta(), None)``; the first
  ``flash_mla_with_kvcache`` call that receives the object plans (for sparse decoding with the
  real topk_length / extra_topk_length) and stores the plan in it, and later calls (other layers)
  reuse it while the shapes stay the same.

``flash_mla_with_kvcache`` called with no plan at all (``tile_scheduler_metadata`` None, or a
tensor without ``num_splits``) plans on the fly for that call.

Dense decoding reads a BF16/FP16 cache through block_table (any page size; None for a non-paged
cache [b, s_k, h_k, d]) and cache_seqlens, and never answers silently on a bad length or table
entry (see flash_mla.device_errors); sparse decoding
(``indices`` given, DeepSeek V3.2 DSA) reads the tokens each query names, from an FP8 cache
(``is_fp8_kvcache=True``: the V3.2 layout for head_dim 576, MODEL1 for 512) or a BF16 cache.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, NoReturn, Optional, Tuple

import torch

# Tokens per KV tile of the decode kernels (flashmla::kDecodeTileTokens). The tensor form of
# get_mla_metadata does not see the KV cache; the plan works in tiles of this many tokens
# whatever the page size.
_PLAN_PAGE_BLOCK_SIZE = 64
# Ints per part of the tile-scheduler metadata (flashmla::kDecodeMetadataInts).
_METADATA_INTS = 8


def _not_implemented(feature: str) -> NoReturn:
    raise NotImplementedError(f"{feature} is not implemented yet in this library (flash_mla)")


@dataclasses.dataclass
class FlashMLASchedMeta:
    """Tile-scheduler metadata of the newer FlashMLA interface, filled on first use."""

    @dataclasses.dataclass
    class Config:
        b: int
        s_q: int
        h_q: int
        page_block_size: int
        h_k: int

        causal: bool
        is_fp8_kvcache: bool
        topk: Optional[int]

        extra_page_block_size: Optional[int]
        extra_topk: Optional[int]

    have_initialized: bool = False
    config: Optional[Config] = None
    tile_scheduler_metadata: Optional[torch.Tensor] = None  # [num_parts, 8] int32
    num_splits: Optional[torch.Tensor] = None  # [b + 1] int32


def get_mla_metadata(
    cache_seqlens: Optional[torch.Tensor] = None,
    num_q_tokens_per_head_k: Optional[int] = None,
    num_heads_k: Optional[int] = None,
    num_heads_q: Optional[int] = None,
    is_fp8_kvcache: bool = False,
    topk: Optional[int] = None,
) -> Tuple[torch.Tensor, torch.Tensor] | Tuple[FlashMLASchedMeta, None]:
    """Plans the split-KV schedule of a decode batch.

    Arguments:
        cache_seqlens: (batch_size), torch.int32, on the GPU. Leave out (newer form) to get an
            empty FlashMLASchedMeta that flash_mla_with_kvcache fills on its first call. With
            topk (sparse decoding) only its batch size and device are used.
        num_q_tokens_per_head_k: seq_len_q * num_heads_q // num_heads_k.
        num_heads_k: the number of KV heads (1 for sparse decoding).
        num_heads_q: the number of query heads; needed with topk (seq_len_q is then
            num_q_tokens_per_head_k * num_heads_k // num_heads_q).
        is_fp8_kvcache: whether the cache is FP8. The sparse plan does not depend on it; dense
            FP8 decoding (is_fp8_kvcache without topk) is not implemented.
        topk: the number of indices per query token (indices.shape[-1]); given, the plan is for
            sparse decoding (flash_mla_with_kvcache with indices=...). The plan assumes every
            query uses all topk entries and no extra cache; a plan made for other lengths gives
            the same results and only balances the work less evenly (the newer form plans with
            the real topk_length and extra sets).

    Returns:
        Tensor form: tile_scheduler_metadata (num_parts, 8) int32 and num_splits
        (batch_size + 1) int32, computed on the current stream without a host synchronisation.
        Newer form: (FlashMLASchedMeta(), None).
    """
    if cache_seqlens is None:
        return FlashMLASchedMeta(), None
    if topk is None and is_fp8_kvcache:
        _not_implemented(
            "get_mla_metadata with is_fp8_kvcache=True and no topk (dense FP8 decoding)"
        )
    if num_q_tokens_per_head_k is None or num_heads_k is None:
        raise TypeError(
            "get_mla_metadata: the tensor form needs cache_seqlens, num_q_tokens_per_head_k and "
            "num_heads_k; call get_mla_metadata() without arguments for the newer form"
        )
    if topk is not None:
        return _sparse_metadata_for(
            cache_seqlens, int(num_q_tokens_per_head_k), int(num_heads_k), num_heads_q, int(topk)
        )
    del num_heads_q  # Only sparse attention uses it.
    return torch.ops.flash_mla.get_decode_metadata(
        cache_seqlens, int(num_q_tokens_per_head_k), int(num_heads_k), _PLAN_PAGE_BLOCK_SIZE, 0
    )


def _sparse_metadata_for(
    cache_seqlens: torch.Tensor,
    num_q_tokens_per_head_k: int,
    num_heads_k: int,
    num_heads_q: Optional[int],
    topk: int,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """The tensor form of get_mla_metadata for sparse decoding."""
    if num_heads_q is None:
        raise TypeError(
            "get_mla_metadata: num_heads_q is needed with topk (sparse decoding), got None"
        )
    num_heads_q = int(num_heads_q)
    if num_heads_q <= 0:
        raise ValueError(f"get_mla_metadata: num_heads_q must be positive, got {num_heads_q}")
    if num_heads_k <= 0:
        raise ValueError(f"get_mla_metadata: num_heads_k must be positive, got {num_heads_k}")
    query_rows = num_q_tokens_per_head_k * num_heads_k
    if num_q_tokens_per_head_k <= 0 or query_rows % num_heads_q != 0:
        raise ValueError(
            "get_mla_metadata: num_q_tokens_per_head_k must be seq_len_q * num_heads_q // "
            f"num_heads_k, a positive multiple of num_heads_q / num_heads_k = {num_heads_q} / "
            f"{num_heads_k}, got {num_q_tokens_per_head_k}"
        )
    return torch.ops.flash_mla.get_sparse_decode_metadata(
        cache_seqlens, query_rows // num_heads_q, num_heads_q, topk, None, 0, None, 0
    )


def flash_mla_with_kvcache(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    block_table: Optional[torch.Tensor],
    cache_seqlens: Optional[torch.Tensor],
    head_dim_v: int,
    tile_scheduler_metadata: torch.Tensor | FlashMLASchedMeta | None = None,
    num_splits: Optional[torch.Tensor] = None,
    softmax_scale: Optional[float] = None,
    causal: bool = False,
    is_fp8_kvcache: bool = False,
    indices: Optional[torch.Tensor] = None,
    attn_sink: Optional[torch.Tensor] = None,
    extra_k_cache: Optional[torch.Tensor] = None,
    extra_indices_in_kvcache: Optional[torch.Tensor] = None,
    topk_length: Optional[torch.Tensor] = None,
    extra_topk_length: Optional[torch.Tensor] = None,
    descale_q: Optional[torch.Tensor] = None,
    descale_k: Optional[torch.Tensor] = None,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """MLA decoding over a paged KV cache: dense, or sparse when ``indices`` is given.

    Arguments:
        q: (batch_size, seq_len_q, num_heads_q, head_dim), last dim contiguous; bfloat16 or
            float16 (dense), bfloat16 (sparse). head_dim is 576 (DeepSeek V3/V3.1/V3.2) or 512
            (MODEL1).
        k_cache: (num_blocks, page_block_size, num_heads_k, head_dim_or_bytes); V is the first
            head_dim_v columns of each K row.
            Dense: dtype of q, any num_heads_k dividing num_heads_q, any page_block_size >= 1;
            with block_table None, a non-paged cache (batch_size, seqlen_k, num_heads_k,
            head_dim) whose row i holds sequence i.
            Sparse: num_heads_k 1, any page_block_size, and the layout is_fp8_kvcache selects:
            - is_fp8_kvcache=True, head_dim 576 (DeepSeek V3.2): 656 bytes a token (512
              float8_e4m3 NoPE values, 4 float32 scales, one per 128 values, 64 bfloat16 RoPE
              values); dtype float8_e4m3fn or uint8, shape (num_blocks, page_block_size, 1, 656);
              any stride between blocks (FlashMLA's quantizer leaves a gap).
            - is_fp8_kvcache=True, head_dim 512 (MODEL1): each page block holds page_block_size
              rows of 576 bytes (448 float8_e4m3 NoPE + 64 bfloat16 RoPE values) and then
              page_block_size rows of 8 bytes (7 float8_e8m0 scales, one per 64 values, 1 pad),
              padded to a multiple of 576 bytes; k_cache is the (num_blocks, page_block_size, 1,
              584) view of the blocks that FlashMLA's quantizer returns (stride 0 = the block
              stride in bytes).
            - is_fp8_kvcache=False: bfloat16 rows, shape (num_blocks, page_block_size, 1,
              head_dim).
            flash_mla.kv_cache.quantize_k_cache builds both FP8 layouts.
        block_table: (batch_size, max_num_blocks_per_seq), torch.int32, or None (dense: a
            non-paged k_cache; sparse: ignored). Entries must be in [0, num_blocks) for the pages
            a sequence uses; the others are never read.
        cache_seqlens: (batch_size), torch.int32, each in [0, max_num_blocks_per_seq *
            page_block_size] (non-paged: [0, seqlen_k]). Dense only; may be None for sparse
            decoding (ignored there). A bad length or table entry gives NaN in that sequence's
            out and lse and is recorded (flash_mla.read_error_record); with FLASH_MLA_CHECKED=1
            the call raises ValueError naming it.
        head_dim_v: head dim of V, 512.
        tile_scheduler_metadata, num_splits: from get_mla_metadata (either form). A FlashMLASchedMeta
            may be shared by calls (layers) with the same shapes, topk_length and
            extra_topk_length; a call with other shapes raises ValueError.
        softmax_scale: scale of QK^T before the softmax; defaults to head_dim ** -0.5.
        causal: bottom-right aligned causal mask (dense only, matters when seq_len_q > 1); must be
            False with indices.
        is_fp8_kvcache: the cache is FP8 (sparse decoding; dense FP8 is not implemented).
        indices: (batch_size, seq_len_q, topk), torch.int32, last dim contiguous: enables sparse
            decoding. indices[i][j][k] = block index * page_block_size + offset in the block of
            the k-th token that query token j of sequence i attends to. Entries that are -1, out
            of range (< 0 or >= num_blocks * page_block_size) or at k >= topk_length[i] are
            skipped, and their cache rows are never read.
        attn_sink: (num_heads_q), torch.float32 (sparse only): out is scaled by
            exp(lse) / (exp(lse) + exp(attn_sink[h])); lse is unchanged. +inf gives out = 0,
            -inf changes nothing.
        extra_k_cache, extra_indices_in_kvcache: a second cache (same format, its own
            page_block_size) and its indices (batch_size, seq_len_q, extra_topk), attended in the
            same softmax as the main set (sparse only).
        topk_length, extra_topk_length: (batch_size), torch.int32: only the first topk_length[i]
            entries of indices[i] (and of extra_indices_in_kvcache[i]) count (sparse only;
            extra_topk_length needs extra_k_cache).
        descale_q, descale_k: not implemented (NotImplementedError).

    Returns:
        out: (batch_size, seq_len_q, num_heads_q, head_dim_v), dtype of q.
        softmax_lse: (batch_size, num_heads_q, seq_len_q), torch.float32 (natural log); +inf
            (and out 0) for a query that attends to no token.
    """
    for name, value in (("descale_q", descale_q), ("descale_k", descale_k)):
        if value is not None:
            _not_implemented(f"flash_mla_with_kvcache with {name}=... (FP8 queries)")
    if isinstance(tile_scheduler_metadata, FlashMLASchedMeta) and num_splits is not None:
        raise ValueError(
            "flash_mla_with_kvcache: num_splits must be None when tile_scheduler_metadata is "
            "a FlashMLASchedMeta (from get_mla_metadata())"
        )
    if softmax_scale is None:
        softmax_scale = q.shape[-1] ** (-0.5)
    if indices is not None:
        return _sparse_decode(
            q,
            k_cache,
            int(head_dim_v),
            tile_scheduler_metadata,
            num_splits,
            float(softmax_scale),
            bool(causal),
            bool(is_fp8_kvcache),
            indices,
            attn_sink,
            extra_k_cache,
            extra_indices_in_kvcache,
            topk_length,
            extra_topk_length,
        )

    if is_fp8_kvcache:
        _not_implemented(
            "flash_mla_with_kvcache with is_fp8_kvcache=True and no indices (dense FP8 decoding)"
        )
    for name, value in (
        ("attn_sink", attn_sink),
        ("extra_k_cache", extra_k_cache),
        ("extra_indices_in_kvcache", extra_indices_in_kvcache),
        ("topk_length", topk_length),
        ("extra_topk_length", extra_topk_length),
    ):
        if value is not None:
            raise ValueError(
                f"flash_mla_with_kvcache: {name} is only used by sparse decoding and needs "
                "indices=...; dense decoding (indices=None) takes None"
            )
    if cache_seqlens is None:
        raise ValueError("flash_mla_with_kvcache: cache_seqlens is required for dense decoding")

    def run(metadata: torch.Tensor, splits: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        return torch.ops.flash_mla.dense_decode_fwd(
            q,
            k_cache,
            block_table,
            cache_seqlens,
            int(head_dim_v),
            metadata,
            splits,
            float(softmax_scale),
            bool(causal),
        )

    if isinstance(tile_scheduler_metadata, FlashMLASchedMeta):
        return _run_with_sched_meta(
            tile_scheduler_metadata,
            lambda: _sched_config(q, k_cache, causal),
            lambda: _plan(q, k_cache, cache_seqlens),
            run,
        )
    if tile_scheduler_metadata is None or num_splits is None:
        # No complete plan was passed (e.g. only the first tensor of the tensor form): plan for
        # this call. Planning is one small kernel on the current stream, graph-safe.
        return run(*_plan(q, k_cache, cache_seqlens))
    return run(tile_scheduler_metadata, num_splits)


def _sparse_decode(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    head_dim_v: int,
    tile_scheduler_metadata: torch.Tensor | FlashMLASchedMeta | None,
    num_splits: Optional[torch.Tensor],
    softmax_scale: float,
    causal: bool,
    is_fp8_kvcache: bool,
    indices: torch.Tensor,
    attn_sink: Optional[torch.Tensor],
    extra_k_cache: Optional[torch.Tensor],
    extra_indices: Optional[torch.Tensor],
    topk_length: Optional[torch.Tensor],
    extra_topk_length: Optional[torch.Tensor],
) -> Tuple[torch.Tensor, torch.Tensor]:
    """The sparse path of flash_mla_with_kvcache (indices given)."""
    if causal:
        raise ValueError(
            "flash_mla_with_kvcache: causal must be False when indices is given (sparse decoding "
            "attends exactly the listed tokens), got causal=True"
        )
    if extra_topk_length is not None and extra_k_cache is None:
        raise ValueError(
            "flash_mla_with_kvcache: extra_topk_length needs extra_k_cache and "
            "extra_indices_in_kvcache (it limits the extra index set), got extra_k_cache=None"
        )
    if (extra_k_cache is None) != (extra_indices is None):
        missing = "extra_indices_in_kvcache" if extra_indices is None else "extra_k_cache"
        raise ValueError(
            f"flash_mla_with_kvcache: {missing} must be given together with "
            f"{'extra_k_cache' if extra_indices is None else 'extra_indices_in_kvcache'}, "
            "got None"
        )

    def run(metadata: torch.Tensor, splits: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        return torch.ops.flash_mla.sparse_decode_fwd(
            q,
            k_cache,
            indices,
            topk_length,
            attn_sink,
            metadata,
            splits,
            extra_k_cache,
            extra_indices,
            extra_topk_length,
            head_dim_v,
            softmax_scale,
            is_fp8_kvcache,
        )

    def plan() -> Tuple[torch.Tensor, torch.Tensor]:
        return _plan_sparse(q, indices, topk_length, extra_indices, extra_topk_length)

    if isinstance(tile_scheduler_metadata, FlashMLASchedMeta):

        def config() -> FlashMLASchedMeta.Config:
            return FlashMLASchedMeta.Config(
                b=q.shape[0],
                s_q=q.shape[1],
                h_q=q.shape[2],
                page_block_size=k_cache.shape[1],
                h_k=k_cache.shape[2],
                causal=False,
                is_fp8_kvcache=is_fp8_kvcache,
                topk=indices.shape[-1],
                extra_page_block_size=None if extra_k_cache is None else extra_k_cache.shape[1],
                extra_topk=None if extra_indices is None else extra_indices.shape[-1],
            )

        return _run_with_sched_meta(tile_scheduler_metadata, config, plan, run)
    if tile_scheduler_metadata is None or num_splits is None:
        return run(*plan())
    return run(tile_scheduler_metadata, num_splits)


def _plan_sparse(
    q: torch.Tensor,
    indices: torch.Tensor,
    topk_length: Optional[torch.Tensor],
    extra_indices: Optional[torch.Tensor],
    extra_topk_length: Optional[torch.Tensor],
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Plans a sparse call from the shapes of q and the index sets, and the real lengths."""
    if not (
        isinstance(q, torch.Tensor)
        and q.is_cuda
        and q.dim() == 4
        and min(q.shape[0], q.shape[1], q.shape[2]) >= 1
    ):
        # Malformed q: sparse_decode_fwd reports it (naming q) before it looks at the plan.
        device = q.device if isinstance(q, torch.Tensor) else None
        return (
            torch.zeros((1, _METADATA_INTS), dtype=torch.int32, device=device),
            torch.zeros((1,), dtype=torch.int32, device=device),
        )
    b, s_q, h_q = q.shape[0], q.shape[1], q.shape[2]
    # Malformed index sets plan for one column; sparse_decode_fwd then reports them.
    topk = max(indices.shape[-1], 1) if indices.dim() >= 1 else 1
    extra_topk = 0
    if extra_indices is not None:
        extra_topk = max(extra_indices.shape[-1], 1) if extra_indices.dim() >= 1 else 1
    elif extra_topk_length is not None:
        extra_topk_length = None  # rejected by sparse_decode_fwd, naming it
    return torch.ops.flash_mla.get_sparse_decode_metadata(
        q, s_q, h_q, topk, topk_length, extra_topk, extra_topk_length, 0
    )


def _plan(
    q: torch.Tensor, k_cache: torch.Tensor, cache_seqlens: torch.Tensor
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Plans a dense call from the shapes of q and k_cache."""
    rows, heads_kv, page = 1, 1, _PLAN_PAGE_BLOCK_SIZE
    if q.dim() == 4 and k_cache.dim() == 4:
        h_kv = k_cache.shape[2]
        if h_kv > 0 and q.shape[2] % h_kv == 0 and q.shape[1] * q.shape[2] > 0:
            rows, heads_kv, page = q.shape[1] * q.shape[2] // h_kv, h_kv, k_cache.shape[1]
    # Malformed shapes keep the placeholder plan above, so that dense_decode_fwd reports them
    # with the argument they concern.
    return torch.ops.flash_mla.get_decode_metadata(cache_seqlens, rows, heads_kv, page, 0)


def _sched_config(q: torch.Tensor, k_cache: torch.Tensor, causal: bool) -> FlashMLASchedMeta.Config:
    return FlashMLASchedMeta.Config(
        b=q.shape[0],
        s_q=q.shape[1],
        h_q=q.shape[2],
        page_block_size=k_cache.shape[1],
        h_k=k_cache.shape[2],
        causal=causal,
        is_fp8_kvcache=False,
        topk=None,
        extra_page_block_size=None,
        extra_topk=None,
    )


def _run_with_sched_meta(
    sched_meta: FlashMLASchedMeta,
    config: Callable[[], FlashMLASchedMeta.Config],
    plan: Callable[[], Tuple[torch.Tensor, torch.Tensor]],
    run: Callable[[torch.Tensor, torch.Tensor], Tuple[torch.Tensor, torch.Tensor]],
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Plans into `sched_meta` on its first use; later checks the call's config against it.

    `config` is only evaluated once the arguments passed the operator's checks on the first call
    (so a malformed call is reported by the operator, naming the argument)."""
    if not sched_meta.have_initialized:
        metadata, splits = plan()
        result = run(metadata, splits)
        # Stored only once a call has succeeded, so a rejected first call leaves it empty.
        sched_meta.config = config()
        sched_meta.tile_scheduler_metadata = metadata
        sched_meta.num_splits = splits
        sched_meta.have_initialized = True
        return result
    expected = sched_meta.config
    actual = config()
    if expected is not None and actual != expected:
        mismatched = [
            f"{field.name} {getattr(expected, field.name)} -> {getattr(actual, field.name)}"
            for field in dataclasses.fields(expected)
            if getattr(expected, field.name) != getattr(actual, field.name)
        ]
        raise ValueError(
            "flash_mla_with_kvcache: the arguments are inconsistent with tile_scheduler_metadata "
            f"(a FlashMLASchedMeta planned for other shapes: {', '.join(mismatched)}); use one "
            "get_mla_metadata() object per batch shape"
        )
    return run(sched_meta.tile_scheduler_metadata, sched_meta.num_splits)


def flash_mla_sparse_fwd(
    q: torch.Tensor,
    kv: torch.Tensor,
    indices: torch.Tensor,
    sm_scale: Optional[float],
    d_v: int = 512,
    attn_sink: Optional[torch.Tensor] = None,
    topk_length: Optional[torch.Tensor] = None,
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Sparse attention prefill (DeepSeek V3.2 DSA / MODEL1): every query token attends to its
    own top-k tokens of one latent KV sequence, named by index.

    Arguments:
        q: (s_q, h_q, d_qk), bfloat16, last dim contiguous; d_qk 576 (V3.2) or 512 (MODEL1),
            h_q 1 .. 128.
        kv: (s_kv, h_kv, d_qk), bfloat16, last dim contiguous, h_kv 1; K and V share storage (V is
            the first d_v columns of each row).
        indices: (s_q, h_kv, topk), torch.int32, last dim contiguous. Entries < 0 (e.g. -1) or
            >= s_kv are skipped and their rows are never read; a token listed twice counts twice.
            No batch dimension: concatenate sequences and offset the indices.
        sm_scale: scale of q . k before the softmax (None: d_qk ** -0.5).
        d_v: the value width; 512 only.
        attn_sink: (h_q), torch.float32, optional: out is scaled by
            exp(lse) / (exp(lse) + exp(attn_sink[h])); lse and max_logits are unchanged. +inf
            gives out = 0, -inf changes nothing.
        topk_length: (s_q), torch.int32, optional: query token i only uses
            indices[i, :, :topk_length[i]] (later entries are skipped and never read).

    Returns:
        out: (s_q, h_q, d_v), bfloat16.
        max_logits: (s_q, h_q), torch.float32, the largest scaled logit (-inf where no entry is
            valid).
        lse: (s_q, h_q), torch.float32, natural-log log-sum-exp of the scaled logits (+inf, and
            out 0, where no entry is valid).
    """
    if sm_scale is None:
        sm_scale = q.shape[-1] ** (-0.5)
    return torch.ops.flash_mla.sparse_prefill_fwd(
        q, kv, indices, float(sm_scale), int(d_v), attn_sink, topk_length
    )


def flash_attn_varlen_func(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    cu_seqlens_qo: torch.Tensor,
    cu_seqlens_kv: torch.Tensor,
    max_seqlen_qo: int,
    max_seqlen_kv: int,
    dropout_p: float = 0.0,
    softmax_scale: Optional[float] = None,
    causal: bool = False,
    deterministic: bool = False,
    is_varlen: bool = True,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Dense MHA prefill (variable length). Not implemented yet."""
    _not_implemented("flash_attn_varlen_func (dense MHA prefill)")


def flash_attn_varlen_qkvpacked_func(
    qkv: torch.Tensor,
    cu_seqlens: torch.Tensor,
    max_seqlen: int,
    head_dim_qk: int,
    dropout_p: float = 0.0,
    softmax_scale: Optional[float] = None,
    causal: bool = False,
    deterministic: bool = False,
    is_varlen: bool = True,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Dense MHA prefill with packed QKV. Not implemented yet."""
    _not_implemented("flash_attn_varlen_qkvpacked_func (dense MHA prefill)")


def flash_attn_varlen_kvpacked_func(
    q: torch.Tensor,
    kv: torch.Tensor,
    cu_seqlens_qo: torch.Tensor,
    cu_seqlens_kv: torch.Tensor,
    max_seqlen_qo: int,
    max_seqlen_kv: int,
    head_dim_qk: int,
    dropout_p: float = 0.0,
    softmax_scale: Optional[float] = None,
    causal: bool = False,
    deterministic: bool = False,
    is_varlen: bool = True,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Dense MHA prefill with packed KV. Not implemented yet."""
    _not_implemented("flash_attn_varlen_kvpacked_func (dense MHA prefill)")
