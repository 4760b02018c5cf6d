"""Fake (meta) implementation of the sparse-prefill operator.

torch.ops.flash_mla.sparse_prefill_fwd is defined in bindings/torch/sparse_prefill_op.cpp, which
names this module as its Python module (PyTorch requires register_fake to be called from exactly
that module); flash_mla._ops imports it, so the registration happens when flash_mla is imported.
"""

from __future__ import annotations

from typing import Optional

import torch


@torch.library.register_fake("flash_mla::sparse_prefill_fwd")
def _sparse_prefill_fwd_fake(
    q: torch.Tensor,
    kv: torch.Tensor,
    indices: torch.Tensor,
    sm_scale: float,
    d_v: int,
    attn_sink: Optional[torch.Tensor],
    topk_length: Optional[torch.Tensor],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    seqlen_q, num_heads_q = q.shape[0], q.shape[1]
    out = q.new_empty((seqlen_q, num_heads_q, d_v))
    max_logits = q.new_empty((seqlen_q, num_heads_q), dtype=torch.float32)
    lse = q.new_empty((seqlen_q, num_heads_q), dtype=torch.float32)
    return out, max_logits, lse
