"""Fake (meta) implementations of the torch.ops.flash_mla operators.

They give torch.compile the shapes, dtypes and devices of the outputs without running a kernel.
The C++ library names this module with ``m.set_python_module("flash_mla._ops")``, so the
registrations below must stay in this module.
"""

from functools import lru_cache
from typing import Optional

import torch

from flash_mla import _C

METADATA_INTS: int = _C.DECODE_METADATA_INTS


@lru_cache(maxsize=None)
def _sm_count(device_index: int) -> int:
    return torch.cuda.get_device_properties(device_index).multi_processor_count


def _resolve_num_sms(device: torch.device, num_sms: int) -> int:
    """num_sms if positive, else the SM count of `device` (1 off CUDA: the real operators
    reject non-CUDA tensors, so any shape will do for a fake)."""
    if num_sms > 0:
        return num_sms
    if device.type != "cuda":
        return 1
    index = device.index if device.index is not None else torch.cuda.current_device()
    return _sm_count(index)


def decode_num_parts(
    batch: int, rows_per_kv_head: int, num_heads_kv: int, device: torch.device, num_sms: int = 0
) -> int:
    """Rows of the tile-scheduler metadata that ``get_decode_metadata`` returns for a shape."""
    num_sms = _resolve_num_sms(device, num_sms)
    return _C.decode_num_parts(int(batch), int(rows_per_kv_head), int(num_heads_kv), int(num_sms))


@torch.library.register_fake("flash_mla::get_decode_metadata")
def _get_decode_metadata_fake(
    cache_seqlens: torch.Tensor,
    rows_per_kv_head: int,
    num_heads_kv: int,
    page_block_size: int,
    num_sms: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    batch = cache_seqlens.shape[0]
    num_parts = decode_num_parts(
        batch, rows_per_kv_head, num_heads_kv, cache_seqlens.device, num_sms
    )
    tile_scheduler_metadata = cache_seqlens.new_empty((num_parts, METADATA_INTS), dtype=torch.int32)
    num_splits = cache_seqlens.new_empty((batch + 1,), dtype=torch.int32)
    return tile_scheduler_metadata, num_splits


@torch.library.register_fake("flash_mla::dense_decode_fwd")
def _dense_decode_fwd_fake(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    block_table: Optional[torch.Tensor],
    cache_seqlens: torch.Tensor,
    head_dim_v: int,
    tile_scheduler_metadata: torch.Tensor,
    num_splits: torch.Tensor,
    softmax_scale: float,
    causal: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    batch, seqlen_q, num_heads_q, _ = q.shape
    out = q.new_empty((batch, seqlen_q, num_heads_q, head_dim_v))
    lse = q.new_empty((batch, num_heads_q, seqlen_q), dtype=torch.float32)
    return out, lse


# Fake implementations of the other operator families live beside this module; importing them
# here registers them whenever the library asks for flash_mla._ops.
from flash_mla import _ops_kv_cache  # noqa: E402,F401
from flash_mla import _ops_sparse  # noqa: E402,F401
from flash_mla import _ops_sparse_prefill  # noqa: E402,F401
