"""FlashMLA-compatible MLA kernels for Hopper GPUs.

``import flash_mla`` offers the same names, arguments, defaults and return shapes as DeepSeek's
FlashMLA, so code written for it (vLLM, SGLang, FlashMLA's own tests) runs unchanged. Dense
decoding over a BF16/FP16 KV cache (paged with any page size, or not paged), sparse (top-k) decoding over FP8 (V3.2, MODEL1) or
BF16 caches and sparse (top-k) prefill over a BF16 latent KV sequence (flash_mla_sparse_fwd) are
implemented, with the FP8 cache tools of ``flash_mla.kv_cache``; the dense MHA prefill entry
points exist but raise NotImplementedError for now.
"""

__version__ = "0.1.0"

import torch  # noqa: F401  (loads libtorch/libc10, which the extension links against)

# Loading the extension registers the torch.ops.flash_mla operators; _ops adds their fake
# implementations (for torch.compile) before anything can call them.
from flash_mla import _C  # noqa: F401  (imported for its registrations)
from flash_mla import _ops  # noqa: F401
from flash_mla.flash_mla_interface import (
    FlashMLASchedMeta,
    flash_attn_varlen_func,
    flash_attn_varlen_kvpacked_func,
    flash_attn_varlen_qkvpacked_func,
    flash_mla_sparse_fwd,
    flash_mla_with_kvcache,
    get_mla_metadata,
)
from flash_mla.device_errors import DeviceError, clear_error_record, read_error_record
from flash_mla.kv_cache import (
    FP8KVCacheLayout,
    dequantize_k_cache,
    quantize_k_cache,
    write_k_cache,
)

__all__ = [
    "FlashMLASchedMeta",
    "get_mla_metadata",
    "flash_mla_with_kvcache",
    "flash_attn_varlen_func",
    "flash_attn_varlen_qkvpacked_func",
    "flash_attn_varlen_kvpacked_func",
    "flash_mla_sparse_fwd",
    "FP8KVCacheLayout",
    "quantize_k_cache",
    "dequantize_k_cache",
    "write_k_cache",
    "DeviceError",
    "read_error_record",
    "clear_error_record",
]
