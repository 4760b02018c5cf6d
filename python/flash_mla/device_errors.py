"""The device error record: bad lengths and block-table entries found by the kernels.

Dense decoding checks the values that live on the GPU (cache_seqlens and the block-table entries
of each sequence's pages) without a host synchronisation: an affected sequence's out and lse rows
become NaN, and the first error of the device is kept in a small record until it is cleared.
``read_error_record()`` reads it on demand. With the environment variable ``FLASH_MLA_CHECKED=1``
every dense decoding call synchronises and raises ValueError naming the argument, the batch index
and the bad value instead (not while a CUDA graph is being captured: read the record after
replaying it).
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import torch

from flash_mla import _C

_KINDS = {
    1: ("negative_seqlen", "cache_seqlens"),
    2: ("seqlen_beyond_capacity", "cache_seqlens"),
    3: ("block_table_entry_out_of_range", "block_table"),
}
_OPERATIONS = {1: "dense_decode"}


@dataclasses.dataclass(frozen=True)
class DeviceError:
    """One recorded error.

    kind: "negative_seqlen", "seqlen_beyond_capacity" or "block_table_entry_out_of_range".
    argument: "cache_seqlens" or "block_table". batch_index: the sequence. position: the
    block-table column (block-table errors), else -1. value: the bad value. limit: the capacity in
    tokens (seqlen_beyond_capacity), num_blocks (block-table errors), else 0.
    """

    kind: str
    operation: str
    argument: str
    batch_index: int
    position: int
    value: int
    limit: int
    message: str

    def __str__(self) -> str:
        return self.message


def _device_index(device: Optional[torch.device | int | str]) -> int:
    if device is None:
        return torch.cuda.current_device()
    if isinstance(device, int):
        return device
    device = torch.device(device)
    if device.type != "cuda":
        raise ValueError(f"read_error_record: device must be a CUDA device, got {device}")
    return device.index if device.index is not None else torch.cuda.current_device()


def read_error_record(
    device: Optional[torch.device | int | str] = None, clear: bool = False
) -> Optional[DeviceError]:
    """The first error recorded on `device` (default: the current one) by the work queued so far
    on its current stream, or None. Synchronises that stream; ``clear=True`` also resets the
    record. Not allowed while the stream is being captured into a CUDA graph."""
    kind, operation, batch_index, position, value, limit, message = _C.read_error_record(
        _device_index(device), bool(clear)
    )
    if kind == 0:
        return None
    kind_name, argument = _KINDS.get(kind, (f"unknown_{kind}", ""))
    return DeviceError(
        kind=kind_name,
        operation=_OPERATIONS.get(operation, "unknown"),
        argument=argument,
        batch_index=batch_index,
        position=position,
        value=value,
        limit=limit,
        message=message,
    )


def clear_error_record(device: Optional[torch.device | int | str] = None) -> None:
    """Resets the record of `device` (ordered on its current stream; capturable)."""
    _C.clear_error_record(_device_index(device))
