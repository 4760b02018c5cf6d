"""Fake (meta) implementations of the sparse-decode operators.

torch.ops.flash_mla.get_sparse_decode_metadata and torch.ops.flash_mla.sparse_decode_fwd are
defined in bindings/torch/sparse_decode_op.cpp, which names this module as their Python module
(PyTorch requires register_fake to be called from exactly that module); flash_mla._ops imports
it, so the registrations happen when flash_mla is imported.
"""

from __future__ import annotations

from typing import Optional

import torch

from flash_mla import _C


def sparse_decode_num_parts(
    batch: int, seqlen_q: int, num_heads_q: int, device: torch.device, num_sms: int = 0
) -> int:
    """Rows of the tile-scheduler metadata that ``get_sparse_decode_metadata`` returns: the C++
    flashmla::sparse_decode_num_parts, max(1, num_sms // (ceil(h_q / 64) * s_q))."""
    from flash_mla._ops import _resolve_num_sms  # _ops imports this module at its end

    num_sms = _resolve_num_sms(device, num_sms)
    return _C.sparse_decode_num_parts(int(batch), int(seqlen_q), int(num_heads_q), int(num_sms))


@torch.library.register_fake("flash_mla::get_sparse_decode_metadata")
def _get_sparse_decode_metadata_fake(
    batch_ref: torch.Tensor,
    seqlen_q: int,
    num_heads_q: int,
    topk: int,
    topk_length: Optional[torch.Tensor],
    extra_topk: int,
    extra_topk_length: Optional[torch.Tensor],
    num_sms: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    batch = batch_ref.shape[0]
    num_parts = sparse_decode_num_parts(batch, seqlen_q, num_heads_q, batch_ref.device, num_sms)
    tile_scheduler_metadata = batch_ref.new_empty(
        (num_parts, _C.DECODE_METADATA_INTS), dtype=torch.int32
    )
    num_splits = batch_ref.new_empty((batch + 1,), dtype=torch.int32)
    return tile_scheduler_metadata, num_splits


@torch.library.register_fake("flash_mla::sparse_decode_fwd")
def _sparse_decode_fwd_fake(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    indices: torch.Tensor,
    topk_length: Optional[torch.Tensor],
    attn_sink: Optional[torch.Tensor],
    tile_scheduler_metadata: torch.Tensor,
    num_splits: torch.Tensor,
    extra_k_cache: Optional[torch.Tensor],
    extra_indices: Optional[torch.Tensor],
    extra_topk_length: Optional[torch.Tensor],
    head_dim_v: int,
    softmax_scale: float,
    is_fp8_kvcache: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    batch, seqlen_q, num_heads_q, _ = q.shape
    out = q.new_empty((batch, seqlen_q, num_heads_q, head_dim_v))
    lse = q.new_empty((batch, num_heads_q, seqlen_q), dtype=torch.float32)
    return out, lse
