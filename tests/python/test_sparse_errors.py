"""Bad inputs to sparse decoding raise a Python exception that names the offending argument, and
never crash the process or leave a sticky CUDA error behind."""

import pytest
import torch

if not torch.cuda.is_available():
    pytest.skip("flash_mla tests need a CUDA GPU", allow_module_level=True)

import flash_mla  # noqa: E402
from flash_mla.testing import (  # noqa: E402
    SparseDecodeInputs,
    SparseSourceSpec,
    make_sparse_decode_inputs,
)
from error_helpers import ERRORS, expect_error  # noqa: E402

D_V = 512


def valid_inputs(layout: str = "v32", d_qk=None, extra: bool = False) -> SparseDecodeInputs:
    main = SparseSourceSpec(topk=64, page_block_size=64, topk_length=[64, 3])
    extra_spec = (
        SparseSourceSpec(topk=32, page_block_size=2, topk_length=[1, 32]) if extra else None
    )
    return make_sparse_decode_inputs(
        main, b=2, s_q=1, h_q=16, layout=layout, d_qk=d_qk, extra=extra_spec, sink="finite", seed=1
    )


def decode(inputs: SparseDecodeInputs, **overrides):
    args = dict(
        q=inputs.q,
        k_cache=inputs.main.k_cache,
        block_table=None,
        cache_seqlens=None,
        head_dim_v=D_V,
        tile_scheduler_metadata=None,
        num_splits=None,
    )
    args.update(inputs.kwargs())
    args.update(overrides)
    return flash_mla.flash_mla_with_kvcache(**args)


def decode_with_plan(inputs: SparseDecodeInputs, **overrides):
    """With a tensor-form plan, so that the operator (not the planner) sees the bad argument."""
    b, s_q, h_q, _ = inputs.q.shape
    metadata, num_splits = flash_mla.get_mla_metadata(
        inputs.cache_seqlens,
        s_q * h_q,
        1,
        h_q,
        inputs.is_fp8_kvcache,
        inputs.main.indices.shape[-1],
    )
    return decode(inputs, tile_scheduler_metadata=metadata, num_splits=num_splits, **overrides)



@pytest.fixture(autouse=True)
def no_sticky_cuda_error():
    yield
    torch.cuda.synchronize()  # raises if a failed call left an asynchronous CUDA error


@pytest.mark.parametrize("call", [decode, decode_with_plan], ids=["planned_inside", "tensor_plan"])
def test_bad_dtypes(call):
    inputs = valid_inputs()
    expect_error(lambda: call(inputs, q=inputs.q.float()), "q", error=ValueError)
    expect_error(lambda: call(inputs, q=inputs.q.half()), "q", error=ValueError)
    expect_error(
        lambda: call(inputs, indices=inputs.main.indices.long()), "indices", error=ValueError
    )
    expect_error(
        lambda: call(inputs, topk_length=inputs.main.topk_length.long()),
        "topk_length",
        error=ValueError,
    )
    expect_error(
        lambda: call(inputs, attn_sink=inputs.attn_sink.to(torch.bfloat16)),
        "attn_sink",
        error=ValueError,
    )
    bf16_cache = torch.zeros(
        *inputs.main.k_cache.shape[:3], 576, dtype=torch.bfloat16, device="cuda"
    )
    expect_error(lambda: call(inputs, k_cache=bf16_cache), "k_cache", error=ValueError)


def test_fp8_cache_with_is_fp8_false():
    inputs = valid_inputs()
    expect_error(lambda: decode(inputs, is_fp8_kvcache=False), "k_cache", error=ValueError)


def test_wrong_bytes_per_token():
    v32 = valid_inputs("v32")
    model1 = valid_inputs("model1")
    # A MODEL1-sized row with a V3.2 query (d_qk 576) and the reverse.
    expect_error(lambda: decode(v32, k_cache=model1.main.k_cache), "k_cache", error=ValueError)
    expect_error(lambda: decode(model1, k_cache=v32.main.k_cache), "k_cache", error=ValueError)
    message = expect_error(
        lambda: decode(v32, k_cache=v32.main.k_cache[..., :584]), "k_cache", error=ValueError
    )
    assert "656" in message
    message = expect_error(
        lambda: decode(
            model1, k_cache=torch.zeros(3, 64, 1, 656, dtype=torch.uint8, device="cuda")
        ),
        "k_cache",
        error=ValueError,
    )
    assert "584" in message


def test_model1_cache_must_span_whole_blocks():
    """A contiguous [num_blocks, page, 1, 584] tensor is not a MODEL1 cache when page * 584 is
    not a multiple of 576 (the block stride is too small for the padded layout)."""
    inputs = valid_inputs("model1")
    dense = torch.zeros(4, 64, 1, 584, dtype=torch.uint8, device="cuda")
    expect_error(lambda: decode(inputs, k_cache=dense), "k_cache", error=ValueError)


def test_head_dim_not_576_or_512_with_fp8():
    inputs = valid_inputs("v32")
    q = torch.zeros(2, 1, 16, 320, dtype=torch.bfloat16, device="cuda")
    expect_error(lambda: decode(inputs, q=q), "q", error=ValueError)


def test_num_heads_k_not_1():
    inputs = valid_inputs("v32")
    k = inputs.main.k_cache
    two_heads = torch.zeros(k.shape[0], k.shape[1], 2, 656, dtype=torch.uint8, device="cuda")
    expect_error(lambda: decode(inputs, k_cache=two_heads), "k_cache", error=ValueError)
    bf16 = valid_inputs("bf16", 576)
    kb = bf16.main.k_cache
    two_heads_bf16 = torch.zeros(
        kb.shape[0], kb.shape[1], 2, 576, dtype=torch.bfloat16, device="cuda"
    )
    expect_error(lambda: decode(bf16, k_cache=two_heads_bf16), "k_cache", error=ValueError)


def test_indices_shape():
    inputs = valid_inputs()
    idx = inputs.main.indices
    expect_error(lambda: decode_with_plan(inputs, indices=idx[:1]), "indices", error=ValueError)
    expect_error(lambda: decode(inputs, indices=idx[:, 0]), "indices", error=ValueError)
    wide = torch.zeros(2, 1, 128, dtype=torch.int32, device="cuda")
    expect_error(lambda: decode(inputs, indices=wide[..., ::2]), "indices", error=ValueError)
    expect_error(lambda: decode(inputs, indices=idx.cpu()), "indices", error=ValueError)


def test_bad_lengths_and_sink_shapes():
    inputs = valid_inputs()
    expect_error(
        lambda: decode(inputs, topk_length=inputs.main.topk_length[:1]),
        "topk_length",
        error=ValueError,
    )
    expect_error(
        lambda: decode_with_plan(inputs, topk_length=inputs.main.topk_length[:1]),
        "topk_length",
        error=ValueError,
    )
    expect_error(
        lambda: decode(inputs, attn_sink=inputs.attn_sink[:8]), "attn_sink", error=ValueError
    )
    expect_error(
        lambda: decode(inputs, attn_sink=inputs.attn_sink.cpu()), "attn_sink", error=ValueError
    )


def test_causal_with_indices():
    inputs = valid_inputs()
    expect_error(lambda: decode(inputs, causal=True), "causal", error=ValueError)


def test_extra_arguments_come_together():
    inputs = valid_inputs(extra=True)
    plain = valid_inputs()
    expect_error(
        lambda: decode(plain, extra_topk_length=inputs.extra.topk_length),
        "extra_topk_length",
        error=ValueError,
    )
    expect_error(
        lambda: decode(inputs, extra_indices_in_kvcache=None, extra_topk_length=None),
        "extra_indices_in_kvcache",
        error=ValueError,
    )
    expect_error(
        lambda: decode(inputs, extra_k_cache=None, extra_topk_length=None),
        "extra_k_cache",
        error=ValueError,
    )
    # The operator itself checks the same (for callers of torch.ops.flash_mla directly).
    b, s_q, h_q, _ = plain.q.shape
    metadata, num_splits = flash_mla.get_mla_metadata(
        plain.cache_seqlens, s_q * h_q, 1, h_q, True, 64
    )
    expect_error(
        lambda: torch.ops.flash_mla.sparse_decode_fwd(
            plain.q,
            plain.main.k_cache,
            plain.main.indices,
            None,
            None,
            metadata,
            num_splits,
            None,
            None,
            inputs.extra.topk_length,
            D_V,
            576**-0.5,
            True,
        ),
        "extra_topk_length",
        error=ValueError,
    )
    # An extra cache in another format than the main one.
    bf16 = valid_inputs("bf16", 576)
    expect_error(
        lambda: decode(inputs, extra_k_cache=bf16.main.k_cache), "extra_k_cache", error=ValueError
    )


def test_dense_only_and_sparse_only_arguments():
    inputs = valid_inputs()
    b = inputs.q.shape[0]
    table = torch.zeros(b, 4, dtype=torch.int32, device="cuda")
    seqlens = torch.full((b,), 10, dtype=torch.int32, device="cuda")
    bf16 = valid_inputs("bf16", 576)
    # Without indices, the sparse-only arguments are refused (dense decoding has no sink).
    for name, value in (("attn_sink", inputs.attn_sink), ("topk_length", inputs.main.topk_length)):
        expect_error(
            lambda n=name, v=value: flash_mla.flash_mla_with_kvcache(
                bf16.q, bf16.main.k_cache, table, seqlens, D_V, **{n: v}
            ),
            name,
            error=ValueError,
        )
    expect_error(
        lambda: decode(inputs, descale_q=torch.ones(1, device="cuda")),
        "descale_q",
        error=NotImplementedError,
    )


def test_bad_plan():
    inputs = valid_inputs()
    b, s_q, h_q, _ = inputs.q.shape
    metadata, num_splits = flash_mla.get_mla_metadata(
        inputs.cache_seqlens, s_q * h_q, 1, h_q, True, 64
    )
    expect_error(
        lambda: decode(inputs, tile_scheduler_metadata=metadata, num_splits=num_splits[:-1]),
        "num_splits",
        error=ValueError,
    )
    expect_error(
        lambda: decode(inputs, tile_scheduler_metadata=metadata.view(-1, 4), num_splits=num_splits),
        "tile_scheduler_metadata",
        error=ValueError,
    )


def test_get_mla_metadata_errors():
    seqlens = torch.tensor([3, 4], dtype=torch.int32, device="cuda")
    expect_error(
        lambda: flash_mla.get_mla_metadata(seqlens.cpu(), 16, 1, 16, True, 64), "cache_seqlens"
    )
    expect_error(
        lambda: flash_mla.get_mla_metadata(seqlens, 16, 1, None, True, 64),
        "num_heads_q",
        error=TypeError,
    )
    expect_error(lambda: flash_mla.get_mla_metadata(seqlens, 16, 1, 0, True, 64), "num_heads_q")
    expect_error(
        lambda: flash_mla.get_mla_metadata(seqlens, 24, 1, 16, True, 64), "num_q_tokens_per_head_k"
    )
    expect_error(lambda: flash_mla.get_mla_metadata(seqlens, 16, 1, 16, True, 0), "topk")
    expect_error(
        lambda: flash_mla.get_mla_metadata(seqlens, 16, 1, is_fp8_kvcache=True),
        "is_fp8_kvcache",
        error=NotImplementedError,
    )


def test_still_works_after_errors():
    inputs = valid_inputs()
    for bad in (
        dict(q=inputs.q.float()),
        dict(indices=inputs.main.indices.long()),
        dict(causal=True),
    ):
        with pytest.raises(ERRORS):
            decode(inputs, **bad)
    out, lse = decode(inputs)
    torch.cuda.synchronize()
    assert not torch.isnan(out).any() and not torch.isnan(lse).any()
