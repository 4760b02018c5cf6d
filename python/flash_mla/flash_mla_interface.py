"""The FlashMLA-compatible Python API.

Names, arguments, defaults and return shapes follow DeepSeek's ``flash_mla.flash_mla_interface``
so that callers run unchanged. Both forms of ``get_mla_metadata`` are accepted:

* the older tensor form, ``get_mla_metadata(cache_seqlens, num_q_tokens_per_head_k, num_heads_k)``,
  plans right away and returns ``(tile_scheduler_metadata, num_splits)`` int32 tensors that are
  passed back to ``flash_mla_with_kvcache``;
* the newer form, ``get_mla_metadata()``, returns ``(FlashMLASchedMeta(), None)``; the first
  ``flash_mla_with_kvcache`` call that receives the object plans and stores the plan in it, and
  later calls (other layers) reuse it while the shapes stay the same.

``flash_mla_with_kvcache`` called with no plan at all (``tile_scheduler_metadata`` None, or a
tensor without ``num_splits``) plans on the fly for that call.
"""

from __future__ import annotations

import dataclasses
from typing import NoReturn, Optional, Tuple

import torch

# Tokens per KV tile of the decode kernels (flashmla::kDecodeTileTokens). The tensor form of
# get_mla_metadata does not see the KV cache, so it plans for pages of this size; FlashMLA's
# dense decoding only supports this page size too.
_PLAN_PAGE_BLOCK_SIZE = 64


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
            empty FlashMLASchedMeta that flash_mla_with_kvcache fills on its first call.
        num_q_tokens_per_head_k: seq_len_q * num_heads_q // num_heads_k.
        num_heads_k: the number of KV heads.
        num_heads_q: the number of query heads (only needed by sparse attention).
        is_fp8_kvcache, topk: sparse / FP8 decoding, not implemented yet.

    Returns:
        Tensor form: tile_scheduler_metadata (num_parts, 8) int32 and num_splits
        (batch_size + 1) int32, computed on the current stream without a host synchronisation.
        Newer form: (FlashMLASchedMeta(), None).
    """
    if cache_seqlens is None:
        return FlashMLASchedMeta(), None
    if is_fp8_kvcache or topk is not None:
        _not_implemented("get_mla_metadata with is_fp8_kvcache=True or topk (sparse/FP8 decoding)")
    if num_q_tokens_per_head_k is None or num_heads_k is None:
        raise TypeError(
            "get_mla_metadata: the tensor form needs cache_seqlens, num_q_tokens_per_head_k and "
            "num_heads_k; call get_mla_metadata() without arguments for the newer form"
        )
    del num_heads_q  # Only sparse attention uses it.
    return torch.ops.flash_mla.get_decode_metadata(
        cache_seqlens, int(num_q_tokens_per_head_k), int(num_heads_k), _PLAN_PAGE_BLOCK_SIZE, 0
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
    """MLA decoding over a paged KV cache.

    Arguments:
        q: (batch_size, seq_len_q, num_heads_q, head_dim), bfloat16 or float16, last dim
            contiguous. head_dim is 576 (DeepSeek V3/V3.1/V3.2) or 512.
        k_cache: (num_blocks, page_block_size, num_heads_k, head_dim), dtype of q; V is the first
            head_dim_v columns of each row.
        block_table: (batch_size, max_num_blocks_per_seq), torch.int32.
        cache_seqlens: (batch_size), torch.int32; 0 is allowed.
        head_dim_v: head dim of V, 512.
        tile_scheduler_metadata, num_splits: from get_mla_metadata (either form).
        softmax_scale: scale of QK^T before the softmax; defaults to head_dim ** -0.5.
        causal: bottom-right aligned causal mask (only matters when seq_len_q > 1).
        is_fp8_kvcache, indices, attn_sink, extra_*, topk_length, descale_*: sparse / FP8
            decoding, not implemented yet.

    Returns:
        out: (batch_size, seq_len_q, num_heads_q, head_dim_v), dtype of q.
        softmax_lse: (batch_size, num_heads_q, seq_len_q), torch.float32; +inf (and out 0) for a
            query that attends to no token.
    """
    _reject_unimplemented(
        is_fp8_kvcache=is_fp8_kvcache,
        indices=indices,
        attn_sink=attn_sink,
        extra_k_cache=extra_k_cache,
        extra_indices_in_kvcache=extra_indices_in_kvcache,
        topk_length=topk_length,
        extra_topk_length=extra_topk_length,
        descale_q=descale_q,
        descale_k=descale_k,
    )
    if block_table is None or cache_seqlens is None:
        raise ValueError(
            "flash_mla_with_kvcache: block_table and cache_seqlens are required for dense decoding"
        )
    if softmax_scale is None:
        softmax_scale = q.shape[-1] ** (-0.5)

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
        if num_splits is not None:
            raise ValueError(
                "flash_mla_with_kvcache: num_splits must be None when tile_scheduler_metadata is "
                "a FlashMLASchedMeta (from get_mla_metadata())"
            )
        return _run_with_sched_meta(tile_scheduler_metadata, q, k_cache, cache_seqlens, causal, run)
    if tile_scheduler_metadata is None or num_splits is None:
        # No complete plan was passed (e.g. only the first tensor of the tensor form): plan for
        # this call. Planning is one small kernel on the current stream, graph-safe.
        return run(*_plan(q, k_cache, cache_seqlens))
    return run(tile_scheduler_metadata, num_splits)


def _reject_unimplemented(**features: object) -> None:
    for name, value in features.items():
        if value is not None and value is not False:
            _not_implemented(f"flash_mla_with_kvcache with {name}=... (sparse/FP8 decoding)")


def _plan(
    q: torch.Tensor, k_cache: torch.Tensor, cache_seqlens: torch.Tensor
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Plans a call from the shapes of q and k_cache."""
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


def _run_with_sched_meta(sched_meta, q, k_cache, cache_seqlens, causal, run):
    if not sched_meta.have_initialized:
        metadata, splits = _plan(q, k_cache, cache_seqlens)
        result = run(metadata, splits)
        # Stored only once a call has succeeded, so a rejected first call leaves it empty.
        sched_meta.config = _sched_config(q, k_cache, causal)
        sched_meta.tile_scheduler_metadata = metadata
        sched_meta.num_splits = splits
        sched_meta.have_initialized = True
        return result
    expected = sched_meta.config
    actual = _sched_config(q, k_cache, causal)
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
    sm_scale: float,
    d_v: int = 512,
    attn_sink: Optional[torch.Tensor] = None,
    topk_length: Optional[torch.Tensor] = None,
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Sparse attention prefill: returns (out, max_logits, lse). Not implemented yet."""
    _not_implemented("flash_mla_sparse_fwd (sparse prefill)")


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
