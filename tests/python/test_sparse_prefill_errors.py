"""Bad inputs to sparse prefill (flash_mla_sparse_fwd) raise a Python exception that names the
offending argument, and never crash the process, leave a sticky CUDA error behind or return a
silently wrong answer."""

import math
import re

import pytest
import torch

if not torch.cuda.is_available():
    pytest.skip("flash_mla tests need a CUDA GPU", allow_module_level=True)

import flash_mla  # noqa: E402
from flash_mla.testing import (  # noqa: E402
    SparsePrefillInputs,
    check_sparse_prefill_against_reference,
    make_sparse_prefill_inputs,
)
from error_helpers import ERRORS, expect_error  # noqa: E402

D_V = 512
S_Q, S_KV, TOPK, H_Q = 5, 300, 64, 16


def valid_inputs(d_qk: int = 576, **kwargs) -> SparsePrefillInputs:
    args = dict(h_q=H_Q, d_qk=d_qk, topk_length="random", sink="finite", seed=1)
    args.update(kwargs)
    return make_sparse_prefill_inputs(S_Q, S_KV, TOPK, **args)


def prefill(inputs: SparsePrefillInputs, **overrides):
    args = dict(
        q=inputs.q,
        kv=inputs.kv,
        indices=inputs.indices,
        sm_scale=inputs.sm_scale,
        d_v=D_V,
        attn_sink=inputs.attn_sink,
        topk_length=inputs.topk_length,
    )
    args.update(overrides)
    return flash_mla.flash_mla_sparse_fwd(**args)



def error_or_correct(inputs: SparsePrefillInputs, *names: str, **overrides) -> None:
    """A layout or value the core may support or reject: either an error naming one of `names`,
    or a result that matches the reference (never a silent wrong answer)."""
    try:
        out, max_logits, lse = prefill(inputs, **overrides)
    except ERRORS as error:
        message = str(error)
        assert any(
            re.search(rf"\b{re.escape(name)}\b", message) for name in names
        ), f"the message should name one of {names}: {message}"
        return
    checked = SparsePrefillInputs(
        q=overrides.get("q", inputs.q),
        kv=overrides.get("kv", inputs.kv),
        indices=overrides.get("indices", inputs.indices),
        sm_scale=overrides.get("sm_scale", inputs.sm_scale),
        attn_sink=overrides.get("attn_sink", inputs.attn_sink),
        topk_length=overrides.get("topk_length", inputs.topk_length),
        kv_storage=inputs.kv_storage,
    )
    check_sparse_prefill_against_reference(checked, out, max_logits, lse)


@pytest.fixture(autouse=True)
def no_sticky_cuda_error():
    yield
    torch.cuda.synchronize()  # raises if a failed call left an asynchronous CUDA error


def test_bad_dtypes():
    inputs = valid_inputs()
    expect_error(lambda: prefill(inputs, q=inputs.q.float()), "q", error=ValueError)
    expect_error(lambda: prefill(inputs, q=inputs.q.half()), "q", error=ValueError)
    expect_error(lambda: prefill(inputs, kv=inputs.kv.half()), "kv", error=ValueError)
    expect_error(lambda: prefill(inputs, kv=inputs.kv.float()), "kv", error=ValueError)
    expect_error(
        lambda: prefill(inputs, indices=inputs.indices.long()), "indices", error=ValueError
    )
    expect_error(
        lambda: prefill(inputs, topk_length=inputs.topk_length.long()),
        "topk_length",
        error=ValueError,
    )
    expect_error(
        lambda: prefill(inputs, attn_sink=inputs.attn_sink.to(torch.bfloat16)),
        "attn_sink",
        error=ValueError,
    )
    expect_error(
        lambda: prefill(inputs, attn_sink=inputs.attn_sink.double()), "attn_sink", error=ValueError
    )


def test_tensors_on_the_cpu():
    inputs = valid_inputs()
    for name in ("q", "kv", "indices", "attn_sink", "topk_length"):
        value = getattr(inputs, name)
        expect_error(
            lambda n=name, v=value: prefill(inputs, **{n: v.cpu()}), name, error=ValueError
        )
    # Every tensor on the CPU reaches the CPU registration, which names q.
    expect_error(
        lambda: prefill(
            inputs,
            q=inputs.q.cpu(),
            kv=inputs.kv.cpu(),
            indices=inputs.indices.cpu(),
            attn_sink=inputs.attn_sink.cpu(),
            topk_length=inputs.topk_length.cpu(),
        ),
        "q",
        error=ValueError,
    )


def test_q_shape():
    inputs = valid_inputs()
    expect_error(lambda: prefill(inputs, q=inputs.q[0]), "q", error=ValueError)
    expect_error(lambda: prefill(inputs, q=inputs.q[None]), "q", error=ValueError)
    # A head_dim that is neither 576 nor 512 (kv to match, so that q is the one named).
    q320 = torch.zeros(S_Q, H_Q, 320, dtype=torch.bfloat16, device="cuda")
    kv320 = torch.zeros(S_KV, 1, 320, dtype=torch.bfloat16, device="cuda")
    expect_error(lambda: prefill(inputs, q=q320, kv=kv320), "q", "head_dim_qk")
    # Too many heads (h_q is 1 .. 128).
    for h_q in (129, 256):
        q = torch.zeros(S_Q, h_q, 576, dtype=torch.bfloat16, device="cuda")
        expect_error(lambda q=q: prefill(inputs, q=q, attn_sink=None), "q", "num_heads_q")
    # No head at all.
    q0 = torch.zeros(S_Q, 0, 576, dtype=torch.bfloat16, device="cuda")
    expect_error(lambda: prefill(inputs, q=q0, attn_sink=None), "q", "num_heads_q")


def test_kv_shape():
    inputs = valid_inputs()
    kv = inputs.kv
    # h_kv != 1.
    two_heads = torch.zeros(S_KV, 2, 576, dtype=torch.bfloat16, device="cuda")
    message = expect_error(lambda: prefill(inputs, kv=two_heads), "kv", error=ValueError)
    assert "num_heads_kv" in message
    # 2-D and 4-D kv.
    expect_error(lambda: prefill(inputs, kv=kv[:, 0]), "kv", error=ValueError)
    expect_error(lambda: prefill(inputs, kv=kv[None]), "kv", error=ValueError)
    # head_dim other than q's (MODEL1 kv with a V3.2 query and the reverse).
    model1 = valid_inputs(512)
    expect_error(lambda: prefill(inputs, kv=model1.kv), "kv", error=ValueError)
    expect_error(lambda: prefill(model1, kv=inputs.kv), "kv", error=ValueError)
    # No token at all.
    expect_error(lambda: prefill(inputs, kv=kv[:0]), "kv", "num_kv_tokens")


def test_indices_shape():
    inputs = valid_inputs()
    idx = inputs.indices
    expect_error(lambda: prefill(inputs, indices=idx[:-1]), "indices", error=ValueError)
    expect_error(lambda: prefill(inputs, indices=idx[:, 0]), "indices", error=ValueError)
    expect_error(lambda: prefill(inputs, indices=idx[None]), "indices", error=ValueError)
    two_heads = idx.expand(S_Q, 2, TOPK).contiguous()
    expect_error(lambda: prefill(inputs, indices=two_heads), "indices", error=ValueError)
    expect_error(lambda: prefill(inputs, indices=idx[..., :0]), "indices", error=ValueError)


def test_lengths_and_sink_shapes():
    inputs = valid_inputs()
    expect_error(
        lambda: prefill(inputs, topk_length=inputs.topk_length[:-1]),
        "topk_length",
        error=ValueError,
    )
    expect_error(
        lambda: prefill(inputs, topk_length=inputs.topk_length[None]),
        "topk_length",
        error=ValueError,
    )
    strided_lengths = torch.zeros(2 * S_Q, dtype=torch.int32, device="cuda")[::2]
    expect_error(
        lambda: prefill(inputs, topk_length=strided_lengths), "topk_length", error=ValueError
    )
    expect_error(lambda: prefill(inputs, attn_sink=inputs.attn_sink[:8]), "attn_sink")
    expect_error(lambda: prefill(inputs, attn_sink=inputs.attn_sink[None]), "attn_sink")
    strided_sink = torch.zeros(2 * H_Q, dtype=torch.float32, device="cuda")[::2]
    expect_error(lambda: prefill(inputs, attn_sink=strided_sink), "attn_sink", error=ValueError)


def test_last_dimension_not_contiguous():
    inputs = valid_inputs()
    q_wide = torch.zeros(S_Q, H_Q, 2 * 576, dtype=torch.bfloat16, device="cuda")
    expect_error(lambda: prefill(inputs, q=q_wide[..., ::2]), "q", error=ValueError)
    kv_wide = torch.zeros(S_KV, 1, 2 * 576, dtype=torch.bfloat16, device="cuda")
    expect_error(lambda: prefill(inputs, kv=kv_wide[..., ::2]), "kv", error=ValueError)
    idx_wide = inputs.indices.repeat_interleave(2, dim=-1)
    expect_error(lambda: prefill(inputs, indices=idx_wide[..., ::2]), "indices", error=ValueError)


def test_misaligned_rows():
    """Row strides that are not a multiple of 8 elements (16 bytes): rejected naming the tensor,
    or supported and right."""
    inputs = valid_inputs(poison_unused=False)
    q_buf = torch.zeros(S_Q, H_Q, 580, dtype=torch.bfloat16, device="cuda")
    q_buf[..., :576] = inputs.q
    error_or_correct(inputs, "q", "q_seq_stride", "q_head_stride", q=q_buf[..., :576])
    kv_buf = torch.zeros(S_KV, 1, 577, dtype=torch.bfloat16, device="cuda")
    kv_buf[..., :576] = inputs.kv
    error_or_correct(inputs, "kv", "kv_token_stride", kv=kv_buf[..., :576])
    # q starting 2 bytes into its allocation.
    q_flat = torch.zeros(S_Q * H_Q * 576 + 1, dtype=torch.bfloat16, device="cuda")
    q_off = q_flat[1:].view(S_Q, H_Q, 576)
    q_off.copy_(inputs.q)
    error_or_correct(inputs, "q", q=q_off)


def test_d_v():
    inputs = valid_inputs()
    for d_v in (256, 576, 0, -1):
        expect_error(lambda d=d_v: prefill(inputs, d_v=d), "d_v", "head_dim_v")


def test_bad_sm_scale():
    inputs = valid_inputs()
    for scale in (math.nan, math.inf):
        expect_error(lambda s=scale: prefill(inputs, sm_scale=s), "sm_scale", "softmax_scale")
    # Zero or negative: mathematically well defined; rejected naming it, or computed right.
    for scale in (0.0, -0.05):
        error_or_correct(inputs, "sm_scale", "softmax_scale", sm_scale=scale)


def test_operator_directly():
    """torch.ops.flash_mla.sparse_prefill_fwd checks the same (callers that skip the Python
    wrapper)."""
    inputs = valid_inputs()
    op = torch.ops.flash_mla.sparse_prefill_fwd
    expect_error(
        lambda: op(inputs.q, inputs.kv, inputs.indices.long(), inputs.sm_scale, D_V, None, None),
        "indices",
        error=ValueError,
    )
    expect_error(
        lambda: op(inputs.q, inputs.kv, inputs.indices, inputs.sm_scale, 128, None, None),
        "d_v",
        "head_dim_v",
    )
    out, max_logits, lse = op(
        inputs.q, inputs.kv, inputs.indices, inputs.sm_scale, D_V, inputs.attn_sink, None
    )
    assert out.shape == (S_Q, H_Q, D_V) and lse.shape == max_logits.shape == (S_Q, H_Q)


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
def test_tensors_on_two_devices():
    inputs = valid_inputs()
    other = torch.device("cuda", 1)
    for name in ("kv", "indices", "attn_sink", "topk_length"):
        value = getattr(inputs, name).to(other)
        expect_error(lambda n=name, v=value: prefill(inputs, **{n: v}), name, error=ValueError)


def test_still_works_after_errors():
    inputs = valid_inputs()
    for bad in (
        dict(q=inputs.q.float()),
        dict(indices=inputs.indices.long()),
        dict(d_v=256),
        dict(sm_scale=math.nan),
    ):
        with pytest.raises(ERRORS):
            prefill(inputs, **bad)
    out, max_logits, lse = prefill(inputs)
    torch.cuda.synchronize()
    check_sparse_prefill_against_reference(inputs, out, max_logits, lse)
