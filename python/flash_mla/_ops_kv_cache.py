"""Fake (meta) implementations of the FP8 KV-cache tool operators (flash_mla.kv_cache).

They give torch.compile the outputs' shapes without running a kernel. The C++ library names
flash_mla._ops as the module of its fake implementations, and _ops imports this module.
"""

import torch


@torch.library.register_fake("flash_mla::write_kv_cache")
def _write_kv_cache_fake(
    kv: torch.Tensor, slot_mapping: torch.Tensor, k_cache: torch.Tensor, layout: str
) -> None:
    return None  # writes k_cache in place, returns nothing


@torch.library.register_fake("flash_mla::dequantize_kv_cache")
def _dequantize_kv_cache_fake(k_cache: torch.Tensor, layout: str, head_dim: int) -> torch.Tensor:
    num_blocks, page_block_size = k_cache.shape[0], k_cache.shape[1]
    return k_cache.new_empty((num_blocks, page_block_size, 1, head_dim), dtype=torch.bfloat16)
