"""Bad inputs raise a Python exception that names the offending argument, and never crash the
process or leave a sticky CUDA error behind."""

import pytest
import torch

if not torch.cuda.is_available():
    pytest.skip("flash_mla tests need a CUDA GPU", allow_module_level=True)

import flash_mla  # noqa: E402
from flash_mla.testing import DecodeInputs, make_decode_inputs  # noqa: E402
from error_helpers import ERRORS, expect_error  # noqa: E402

D_V = 512


def valid_inputs(
    h_q: int = 16, h_kv: int = 1, d_qk: int = 576, dtype=torch.bfloat16
) -> DecodeInputs:
    return make_decode_inputs([100, 5], s_q=1, h_q=h_q, h_kv=h_kv, d_qk=d_qk, dtype=dtype, seed=1)


def plan_for(inputs: DecodeInputs):
    s_q, h_q = inputs.q.shape[1], inputs.q.shape[2]
    h_kv = inputs.k_cache.shape[2]
    return flash_mla.get_mla_metadata(inputs.cache_seqlens, max(s_q * h_q // h_kv, 1), h_kv)


def decode(inputs: DecodeInputs, **overrides):
    metadata, num_splits = plan_for(inputs)
    args = dict(
        q=inputs.q,
        k_cache=inputs.k_cache,
        block_table=inputs.block_table,
        cache_seqlens=inputs.cache_seqlens,
        head_dim_v=D_V,
        tile_scheduler_metadata=metadata,
        num_splits=num_splits,
    )
    args.update(overrides)
    return flash_mla.flash_mla_with_kvcache(**args)



@pytest.fixture(autouse=True)
def no_sticky_cuda_error():
    yield
    torch.cuda.synchronize()  # raises if a failed call left an asynchronous CUDA error


def test_q_wrong_dtype():
    inputs = valid_inputs()
    expect_error(lambda: decode(inputs, q=inputs.q.float()), "q")


def test_q_on_cpu():
    inputs = valid_inputs()
    expect_error(lambda: decode(inputs, q=inputs.q.cpu()), "q")


def test_k_cache_on_cpu():
    inputs = valid_inputs()
    expect_error(lambda: decode(inputs, k_cache=inputs.k_cache.cpu()), "k_cache")


def test_mismatched_dtypes():
    inputs = valid_inputs()
    message = expect_error(lambda: decode(inputs, k_cache=inputs.k_cache.half()), "k_cache")
    assert "bfloat16" in message and "float16" in message


def test_block_table_wrong_dtype():
    inputs = valid_inputs()
    expect_error(lambda: decode(inputs, block_table=inputs.block_table.long()), "block_table")


def test_block_table_wrong_batch():
    inputs = valid_inputs()
    expect_error(lambda: decode(inputs, block_table=inputs.block_table[:1]), "block_table")


def test_cache_seqlens_wrong_dtype():
    inputs = valid_inputs()
    expect_error(lambda: decode(inputs, cache_seqlens=inputs.cache_seqlens.long()), "cache_seqlens")


def test_wrong_head_dim_v():
    inputs = valid_inputs()
    expect_error(lambda: decode(inputs, head_dim_v=256), "head_dim_v")
    expect_error(lambda: decode(inputs, head_dim_v=1024), "head_dim_v")


def test_unsupported_head_dim_320():
    inputs = valid_inputs()
    q = inputs.q[..., :320].contiguous()
    k_cache = inputs.k_cache[..., :320].contiguous()
    expect_error(
        lambda: decode(inputs, q=q, k_cache=k_cache, head_dim_v=256),
        "head_dim_qk",
        "head_dim_v",
        "q",
        "k_cache",
    )
    expect_error(lambda: decode(inputs, q=q, k_cache=k_cache), "head_dim_v")


def test_head_dim_mismatch_between_q_and_k_cache():
    inputs = valid_inputs()
    expect_error(lambda: decode(inputs, k_cache=inputs.k_cache[..., :512].contiguous()), "k_cache")


def test_non_contiguous_last_dim():
    inputs = valid_inputs()
    wide = torch.zeros(*inputs.q.shape[:-1], 2 * 576, dtype=inputs.q.dtype, device="cuda")
    expect_error(lambda: decode(inputs, q=wide[..., ::2]), "q")
    wide_k = torch.zeros(*inputs.k_cache.shape[:-1], 2 * 576, dtype=inputs.q.dtype, device="cuda")
    expect_error(lambda: decode(inputs, k_cache=wide_k[..., ::2]), "k_cache")


def test_heads_not_divisible():
    inputs = valid_inputs(h_q=3, h_kv=2)
    expect_error(lambda: decode(inputs), "num_heads_q", "num_heads_kv", "q", "k_cache")


def test_wrong_rank():
    inputs = valid_inputs()
    expect_error(lambda: decode(inputs, q=inputs.q[:, 0]), "q")


def test_bad_plan_tensors():
    inputs = valid_inputs()
    metadata, num_splits = plan_for(inputs)
    expect_error(lambda: decode(inputs, num_splits=num_splits[:-1]), "num_splits")
    expect_error(
        lambda: decode(inputs, tile_scheduler_metadata=metadata.view(-1, 4)),
        "tile_scheduler_metadata",
    )
    expect_error(
        lambda: decode(inputs, tile_scheduler_metadata=metadata.cpu()), "tile_scheduler_metadata"
    )


def test_bad_softmax_scale():
    inputs = valid_inputs()
    expect_error(lambda: decode(inputs, softmax_scale=float("nan")), "softmax_scale")


def test_paged_cache_without_block_table():
    """block_table=None means a non-paged cache [b, s_k, h_kv, d]: a paged cache whose first
    dimension is not the batch size is rejected, naming k_cache."""
    inputs = valid_inputs()
    assert inputs.k_cache.shape[0] != inputs.q.shape[0]
    message = expect_error(lambda: decode(inputs, block_table=None), "k_cache")
    assert "block_table is None" in message, message


def test_get_mla_metadata_errors():
    seqlens = torch.tensor([3, 4], dtype=torch.int32, device="cuda")
    expect_error(lambda: flash_mla.get_mla_metadata(seqlens.cpu(), 16, 1), "cache_seqlens")
    expect_error(lambda: flash_mla.get_mla_metadata(seqlens.long(), 16, 1), "cache_seqlens")
    expect_error(lambda: flash_mla.get_mla_metadata(seqlens, 16, 0), "num_heads_k")
    expect_error(lambda: flash_mla.get_mla_metadata(seqlens, 0, 1), "num_q_tokens_per_head_k")


def test_unimplemented_features():
    inputs = valid_inputs()
    sink = torch.zeros(16, dtype=torch.float32, device="cuda")
    expect_error(
        lambda: decode(inputs, is_fp8_kvcache=True), "is_fp8_kvcache", error=NotImplementedError
    )
    expect_error(
        lambda: decode(inputs, descale_q=torch.ones(1, device="cuda")),
        "descale_q",
        error=NotImplementedError,
    )
    # Sparse-only arguments without indices (dense decoding has no attention sink).
    expect_error(lambda: decode(inputs, attn_sink=sink), "attn_sink", error=ValueError)
    expect_error(
        lambda: flash_mla.get_mla_metadata(inputs.cache_seqlens, 16, 1, is_fp8_kvcache=True),
        "is_fp8_kvcache",
        error=NotImplementedError,
    )
    # Sparse prefill is implemented (tests/python/test_sparse_prefill*.py); dense MHA prefill not.
    with pytest.raises(NotImplementedError, match="not implemented yet"):
        flash_mla.flash_attn_varlen_func(*([None] * 7))


def test_still_works_after_errors():
    inputs = valid_inputs()
    for bad in (dict(q=inputs.q.float()), dict(head_dim_v=256), dict(softmax_scale=-1.0)):
        with pytest.raises(ERRORS):
            decode(inputs, **bad)
    out, lse = decode(inputs)
    torch.cuda.synchronize()
    assert torch.isfinite(out).all() and torch.isfinite(lse).all()
