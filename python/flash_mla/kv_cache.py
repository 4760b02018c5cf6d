"""FP8 KV-cache tools: quantize, dequantize and write the paged KV caches that sparse decoding
reads (``flash_mla_with_kvcache(..., is_fp8_kvcache=True, indices=...)``).

Layouts (``layout`` is one of these strings or an ``FP8KVCacheLayout`` member):

- ``"v32"`` (``FP8KVCacheLayout.V32_FP8Sparse``, DeepSeek V3.2, head_dim 576): each token is 656
  bytes: 512 float8_e4m3 NoPE values, 4 float32 scales (scale j multiplies values
  128j .. 128j+127), 64 bfloat16 RoPE values. A cache is a ``[num_blocks, page_block_size, 1,
  656]`` tensor of dtype float8_e4m3fn (or uint8); the block stride may exceed the dense one.
- ``"model1"`` (``FP8KVCacheLayout.MODEL1_FP8Sparse``, head_dim 512): each page block holds
  page_block_size data rows of 576 bytes (448 float8_e4m3 NoPE values, 64 bfloat16 RoPE values),
  then page_block_size scale rows of 8 bytes (7 float8_e8m0 scales, one per 64 NoPE values, and a
  zero pad byte), padded to a multiple of 576 bytes. A cache is the ``[num_blocks,
  page_block_size, 1, 584]`` view of whole blocks (stride(0) = the padded block size), as
  FlashMLA's quantizer returns it; element (block, r, 0, c) is byte r * 584 + c of the block.
- ``"bf16"``: plain bfloat16 rows ``[num_blocks, page_block_size, 1, head_dim]`` (576 or 512).

Scale rule (both FP8 layouts, bit-identical to FlashMLA's quantizer): for each group of NoPE
values, ``scale = 2 ** ceil(log2(max(amax / 448, 1e-4)))`` (amax = largest |value| of the group,
float32), each value stored as ``float8_e4m3fn(value / scale)`` (round to nearest even). RoPE
values are copied. Dequantization gives ``bfloat16(float(fp8) * scale)``.

Every function runs on the GPU of its tensors, asynchronously on the current stream (no host
synchronisation, so ``write_k_cache`` can be captured in a CUDA graph), and traces under
``torch.compile``.
"""

import enum
from typing import Optional, Tuple, Union

import torch

from flash_mla import _C  # noqa: F401  (loads the library that registers the operators)

__all__ = [
    "FP8KVCacheLayout",
    "empty_k_cache",
    "model1_block_bytes",
    "quantize_k_cache",
    "dequantize_k_cache",
    "write_k_cache",
]


class FP8KVCacheLayout(enum.Enum):
    """The FP8 cache layouts, named as in FlashMLA's tests."""

    V32_FP8Sparse = 1
    MODEL1_FP8Sparse = 2

    def get_meta(self) -> Tuple[int, int, int, int, int]:
        """(head_dim, nope_dim, rope_dim, tile_size, num_tiles), as FlashMLA's tests have it."""
        return {
            FP8KVCacheLayout.V32_FP8Sparse: (576, 512, 64, 128, 4),
            FP8KVCacheLayout.MODEL1_FP8Sparse: (512, 448, 64, 64, 7),
        }[self]


Layout = Union[str, FP8KVCacheLayout]

_ENUM_NAMES = {"V32_FP8Sparse": "v32", "MODEL1_FP8Sparse": "model1"}
_HEAD_DIM = {"v32": 576, "model1": 512}
_V32_TOKEN_BYTES = 656
_MODEL1_TOKEN_BYTES = 584  # 576 data + 8 scale bytes
_MODEL1_BLOCK_ALIGN = 576


def _layout_name(layout: Layout) -> str:
    """The operators' layout string. Enum members of the same names from another module (e.g.
    FlashMLA's tests/quant.py) are accepted too."""
    if isinstance(layout, str) and layout in ("v32", "model1", "bf16"):
        return layout
    name = getattr(layout, "name", None)
    if isinstance(layout, enum.Enum) and name in _ENUM_NAMES:
        return _ENUM_NAMES[name]
    raise ValueError(
        f"layout must be 'v32', 'model1', 'bf16' or an FP8KVCacheLayout member, got {layout!r}"
    )


def model1_block_bytes(page_block_size: int) -> int:
    """Bytes of one MODEL1 page block: page_block_size * 584, padded to a multiple of 576."""
    used = page_block_size * _MODEL1_TOKEN_BYTES
    return -(-used // _MODEL1_BLOCK_ALIGN) * _MODEL1_BLOCK_ALIGN


def empty_k_cache(
    num_blocks: int,
    page_block_size: int,
    layout: Layout,
    device: Optional[Union[torch.device, str]] = None,
    head_dim: Optional[int] = None,
) -> torch.Tensor:
    """A zero-filled cache of ``num_blocks`` page blocks in ``layout``, shaped as the decode
    kernels and ``write_k_cache`` take it: ``[num_blocks, page_block_size, 1, 656]`` float8_e4m3fn
    (v32), the ``[num_blocks, page_block_size, 1, 584]`` float8_e4m3fn view of
    ``[num_blocks, model1_block_bytes(page_block_size)]`` bytes (model1), or
    ``[num_blocks, page_block_size, 1, head_dim]`` bfloat16 (bf16; head_dim is required)."""
    name = _layout_name(layout)
    if num_blocks < 1 or page_block_size < 1:
        raise ValueError(
            f"empty_k_cache: num_blocks and page_block_size must be >= 1, got {num_blocks} and "
            f"{page_block_size}"
        )
    if name == "bf16":
        if head_dim is None:
            raise ValueError("empty_k_cache: head_dim is required for the 'bf16' layout")
        return torch.zeros(
            (num_blocks, page_block_size, 1, head_dim), dtype=torch.bfloat16, device=device
        )
    if head_dim is not None and head_dim != _HEAD_DIM[name]:
        raise ValueError(
            f"empty_k_cache: head_dim must be {_HEAD_DIM[name]} for layout '{name}', got {head_dim}"
        )
    if name == "v32":
        return torch.zeros(
            (num_blocks, page_block_size, 1, _V32_TOKEN_BYTES),
            dtype=torch.float8_e4m3fn,
            device=device,
        )
    blocks = torch.zeros(
        (num_blocks, model1_block_bytes(page_block_size)), dtype=torch.float8_e4m3fn, device=device
    )
    used = page_block_size * _MODEL1_TOKEN_BYTES
    return blocks[:, :used].view(num_blocks, page_block_size, 1, _MODEL1_TOKEN_BYTES)


def write_k_cache(
    kv: torch.Tensor, slot_mapping: torch.Tensor, k_cache: torch.Tensor, layout: Layout
) -> None:
    """Quantizes ``kv`` ([num_tokens, head_dim] bfloat16) into ``k_cache`` in place: token i goes
    to slot ``slot_mapping[i]`` = block * page_block_size + row (int64 or int32). A slot of -1,
    or any slot outside [0, num_blocks * page_block_size), is skipped: its token is not written
    and no byte of the cache changes for it. Slots must be distinct (which of two tokens written
    to one slot wins is unspecified)."""
    torch.ops.flash_mla.write_kv_cache(kv, slot_mapping, k_cache, _layout_name(layout))


def quantize_k_cache(k_cache: torch.Tensor, layout: Layout) -> torch.Tensor:
    """A new cache in ``layout`` holding the bfloat16 cache ``k_cache`` ([num_blocks,
    page_block_size, 1, head_dim]) quantized, shaped as ``empty_k_cache`` describes; the same
    bytes as FlashMLA's ``tests/quant.py`` (``"bf16"`` gives a copy)."""
    name = _layout_name(layout)
    if not isinstance(k_cache, torch.Tensor) or k_cache.dtype != torch.bfloat16:
        got = k_cache.dtype if isinstance(k_cache, torch.Tensor) else type(k_cache).__name__
        raise ValueError(f"quantize_k_cache: k_cache must be a bfloat16 tensor, got {got}")
    if k_cache.dim() != 4 or k_cache.shape[2] != 1:
        raise ValueError(
            "quantize_k_cache: k_cache must have shape [num_blocks, page_block_size, 1, head_dim],"
            f" got {tuple(k_cache.shape)}"
        )
    if not k_cache.is_cuda:
        raise ValueError(f"quantize_k_cache: k_cache must be a CUDA tensor, got {k_cache.device}")
    num_blocks, page_block_size, _, head_dim = k_cache.shape
    if name != "bf16" and head_dim != _HEAD_DIM[name]:
        raise ValueError(
            f"quantize_k_cache: k_cache must have head_dim {_HEAD_DIM[name]} for layout '{name}', "
            f"got shape {tuple(k_cache.shape)}"
        )
    out = empty_k_cache(num_blocks, page_block_size, name, k_cache.device, head_dim)
    slots = torch.arange(num_blocks * page_block_size, dtype=torch.int64, device=k_cache.device)
    write_k_cache(k_cache.reshape(num_blocks * page_block_size, head_dim), slots, out, name)
    return out


def dequantize_k_cache(quant_k_cache: torch.Tensor, layout: Layout) -> torch.Tensor:
    """The bfloat16 values ([num_blocks, page_block_size, 1, head_dim]) of a cache in
    ``layout``: ``bfloat16(float(fp8) * scale)`` for NoPE values, RoPE values as stored."""
    name = _layout_name(layout)
    if name == "bf16":
        if not isinstance(quant_k_cache, torch.Tensor) or quant_k_cache.dim() < 1:
            raise ValueError("dequantize_k_cache: quant_k_cache must be a 4-d bfloat16 tensor")
        head_dim = quant_k_cache.shape[-1]
    else:
        head_dim = _HEAD_DIM[name]
    return torch.ops.flash_mla.dequantize_kv_cache(quant_k_cache, name, head_dim)
