"""Dense MLA decoding (spec section 1) against the PyTorch reference in flash_mla.testing.

Every case draws fresh random data: pages randomly permuted, NaN in every cache row past a
sequence's length, garbage in unused block-table entries. Each case runs two "layers" on one
plan (new q and cache values, same lengths), alternating between the two get_mla_metadata forms.
"""

import random

import pytest
import torch

if not torch.cuda.is_available():
    pytest.skip("flash_mla tests need a CUDA GPU", allow_module_level=True)

import flash_mla  # noqa: E402
from flash_mla.testing import (  # noqa: E402
    check_decode_against_reference,
    make_decode_inputs,
    refill_,
)
from grid_helpers import case_seed  # noqa: E402

D_V = 512
HEADS = [(1, 1), (3, 1), (16, 1), (64, 1), (128, 1), (8, 2), (6, 3), (128, 2)]
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
# Lengths around the 64-token tile and page boundaries, plus empty and single-token sequences.
EDGE_LENGTHS = (0, 1, 63, 64, 65, 127, 128, 129)


def draw_seqlens(rng: random.Random, s_q: int) -> list[int]:
    """1 to 16 sequences: edge lengths, one shorter than s_q, a medium and a long one."""
    pool = list(EDGE_LENGTHS) + [max(s_q - 1, 0), rng.randint(1, 1000), rng.randint(1000, 6000)]
    return [rng.choice(pool) for _ in range(rng.randint(1, 16))]


def plan(form: str, inputs, s_q: int, h_q: int, h_kv: int):
    if form == "tensors":
        return flash_mla.get_mla_metadata(inputs.cache_seqlens, s_q * h_q // h_kv, h_kv)
    return flash_mla.get_mla_metadata()


def run_and_check(inputs, metadata, num_splits, causal: bool, softmax_scale=None) -> None:
    out, lse = flash_mla.flash_mla_with_kvcache(
        inputs.q,
        inputs.k_cache,
        inputs.block_table,
        inputs.cache_seqlens,
        D_V,
        metadata,
        num_splits,
        softmax_scale=softmax_scale,
        causal=causal,
    )
    b, s_q, h_q, _ = inputs.q.shape
    assert out.shape == (b, s_q, h_q, D_V) and out.dtype == inputs.q.dtype
    assert lse.shape == (b, h_q, s_q) and lse.dtype == torch.float32
    check_decode_against_reference(
        inputs, out, lse, D_V, softmax_scale=softmax_scale, causal=causal
    )


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("s_q", [1, 2, 3, 4])
@pytest.mark.parametrize("h_q,h_kv", HEADS)
@pytest.mark.parametrize("d_qk", [576, 512])
@pytest.mark.parametrize("dtype_name", list(DTYPES))
def test_matches_reference(dtype_name: str, d_qk: int, h_q: int, h_kv: int, s_q: int, causal: bool):
    seed = case_seed(dtype_name, d_qk, h_q, h_kv, s_q, causal)
    rng = random.Random(seed)
    seqlens = draw_seqlens(rng, s_q)
    inputs = make_decode_inputs(
        seqlens,
        s_q=s_q,
        h_q=h_q,
        h_kv=h_kv,
        d_qk=d_qk,
        dtype=DTYPES[dtype_name],
        extra_table_columns=rng.randint(0, 3),
        seed=seed,
    )
    form = "tensors" if seed % 2 == 0 else "sched_meta"
    metadata, num_splits = plan(form, inputs, s_q, h_q, h_kv)

    run_and_check(inputs, metadata, num_splits, causal)
    first_plan = getattr(metadata, "tile_scheduler_metadata", metadata)
    # Second layer: same lengths and plan, new values.
    refill_(inputs, seed=seed + 1)
    run_and_check(inputs, metadata, num_splits, causal)
    if form == "sched_meta":
        assert metadata.have_initialized
        assert metadata.tile_scheduler_metadata is first_plan, "the stored plan must be reused"


@pytest.mark.parametrize("d_qk", [576, 512])
def test_long_sequence(d_qk: int):
    seqlens = [65536, 1, 40000, 0]
    inputs = make_decode_inputs(
        seqlens, s_q=2, h_q=128, h_kv=1, d_qk=d_qk, dtype=torch.bfloat16, seed=d_qk
    )
    metadata, num_splits = flash_mla.get_mla_metadata(inputs.cache_seqlens, 2 * 128, 1)
    run_and_check(inputs, metadata, num_splits, causal=True)


@pytest.mark.parametrize("softmax_scale", [0.02, 0.2])
def test_explicit_softmax_scale(softmax_scale: float):
    inputs = make_decode_inputs(
        [1, 300, 4097], s_q=2, h_q=64, h_kv=1, d_qk=576, dtype=torch.bfloat16, seed=5
    )
    metadata, num_splits = flash_mla.get_mla_metadata(inputs.cache_seqlens, 2 * 64, 1)
    run_and_check(inputs, metadata, num_splits, causal=False, softmax_scale=softmax_scale)


def test_strided_views():
    """q, k_cache and block_table as views into larger buffers (last dim still contiguous), and
    a vLLM-style cache [num_blocks, page, d] unsqueezed to one KV head."""
    base = make_decode_inputs(
        [70, 1000, 3], s_q=2, h_q=16, h_kv=1, d_qk=576, dtype=torch.bfloat16, seed=11
    )
    q_buf = torch.full((3, 2, 16, 640), float("nan"), dtype=torch.bfloat16, device="cuda")
    q_buf[..., :576] = base.q
    k_buf = torch.full(
        (*base.k_cache.shape[:2], 576 + 64), float("nan"), dtype=torch.bfloat16, device="cuda"
    )
    k_buf[..., :576] = base.k_cache[:, :, 0]
    table_buf = torch.full((3, base.block_table.shape[1] + 5), -7, dtype=torch.int32, device="cuda")
    table_buf[:, :-5] = base.block_table

    base.q = q_buf[..., :576]
    base.k_cache = k_buf[..., :576].unsqueeze(-2)
    base.block_table = table_buf[:, :-5]
    assert not base.q.is_contiguous() and not base.k_cache.is_contiguous()
    metadata, num_splits = flash_mla.get_mla_metadata(base.cache_seqlens, 2 * 16, 1)
    run_and_check(base, metadata, num_splits, causal=True)


def test_metadata_shapes():
    seqlens = torch.tensor([0, 5, 7000, 64], dtype=torch.int32, device="cuda")
    num_sms = torch.cuda.get_device_properties(0).multi_processor_count
    for s_q, h_q, h_kv in [(1, 128, 1), (2, 128, 1), (1, 16, 1), (4, 8, 2)]:
        metadata, num_splits = flash_mla.get_mla_metadata(seqlens, s_q * h_q // h_kv, h_kv)
        assert metadata.dtype == torch.int32 and num_splits.dtype == torch.int32
        assert metadata.dim() == 2 and metadata.shape[1] == 8
        # vLLM and SGLang size their CUDA-graph buffers as (num_sms, 8).
        assert 1 <= metadata.shape[0] <= num_sms
        assert num_splits.shape == (seqlens.numel() + 1,)
        splits = num_splits.tolist()
        assert splits[0] == 0 and all(a <= b for a, b in zip(splits, splits[1:])), splits


def test_plans_when_no_plan_is_given():
    """A tensor plan without num_splits (how recent vLLM calls it) and no plan at all."""
    inputs = make_decode_inputs(
        [10, 200, 3000], s_q=1, h_q=128, h_kv=1, d_qk=576, dtype=torch.bfloat16, seed=3
    )
    metadata, _ = flash_mla.get_mla_metadata(inputs.cache_seqlens, 128, 1)
    run_and_check(inputs, metadata, None, causal=True)
    run_and_check(inputs, None, None, causal=True)


def test_sched_meta_rejects_other_shapes():
    inputs = make_decode_inputs([10, 20], s_q=1, h_q=16, h_kv=1, d_qk=576, dtype=torch.bfloat16)
    sched, _ = flash_mla.get_mla_metadata()
    run_and_check(inputs, sched, None, causal=False)
    other = make_decode_inputs([10, 20], s_q=2, h_q=16, h_kv=1, d_qk=576, dtype=torch.bfloat16)
    with pytest.raises(ValueError, match="s_q"):
        flash_mla.flash_mla_with_kvcache(
            other.q, other.k_cache, other.block_table, other.cache_seqlens, D_V, sched
        )
