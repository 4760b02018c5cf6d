"""torch.compile and CUDA-graph capture of the flash_mla operators."""

import pytest
import torch

if not torch.cuda.is_available():
    pytest.skip("flash_mla tests need a CUDA GPU", allow_module_level=True)

import flash_mla  # noqa: E402
from flash_mla.testing import (  # noqa: E402
    DecodeInputs,
    check_decode_against_reference,
    make_decode_inputs,
    refill_,
)
from compile_graph_helpers import BACKENDS, capture, compiled_matches_eager, opcheck  # noqa: E402

D_V = 512
S_Q, H_Q, H_KV = 2, 64, 1


def new_inputs(seqlens, capacity=None, seed: int = 0) -> DecodeInputs:
    return make_decode_inputs(
        seqlens,
        s_q=S_Q,
        h_q=H_Q,
        h_kv=H_KV,
        d_qk=576,
        dtype=torch.bfloat16,
        capacity=capacity,
        seed=seed,
    )


def check_against_reference(inputs: DecodeInputs, out: torch.Tensor, lse: torch.Tensor) -> None:
    check_decode_against_reference(inputs, out, lse, D_V, causal=True)


def decode(inputs: DecodeInputs, metadata, num_splits):
    return flash_mla.flash_mla_with_kvcache(
        inputs.q,
        inputs.k_cache,
        inputs.block_table,
        inputs.cache_seqlens,
        D_V,
        metadata,
        num_splits,
        causal=True,
    )


@pytest.mark.parametrize("backend", BACKENDS)
def test_compile_fullgraph_matches_eager(backend: str):
    torch._dynamo.reset()
    inputs = new_inputs([1, 100, 2049, 0, 513])
    metadata, num_splits = flash_mla.get_mla_metadata(inputs.cache_seqlens, S_Q * H_Q // H_KV, H_KV)

    def step(q, k_cache, block_table, cache_seqlens, metadata, num_splits):
        out, lse = flash_mla.flash_mla_with_kvcache(
            q, k_cache, block_table, cache_seqlens, D_V, metadata, num_splits, causal=True
        )
        return out.float() * 2.0, lse + 1.0

    args = (
        inputs.q,
        inputs.k_cache,
        inputs.block_table,
        inputs.cache_seqlens,
        metadata,
        num_splits,
    )
    out_c, lse_c = compiled_matches_eager(step, args, backend)
    check_against_reference(inputs, (out_c / 2.0).to(torch.bfloat16), lse_c - 1.0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_compile_fullgraph_with_planning_inside(backend: str):
    torch._dynamo.reset()
    inputs = new_inputs([5, 700, 64, 3000])

    def step(q, k_cache, block_table, cache_seqlens):
        metadata, num_splits = flash_mla.get_mla_metadata(
            cache_seqlens, q.shape[1] * q.shape[2] // k_cache.shape[2], k_cache.shape[2]
        )
        return flash_mla.flash_mla_with_kvcache(
            q, k_cache, block_table, cache_seqlens, D_V, metadata, num_splits, causal=True
        )

    out, lse = torch.compile(step, fullgraph=True, backend=backend)(
        inputs.q, inputs.k_cache, inputs.block_table, inputs.cache_seqlens
    )
    check_against_reference(inputs, out, lse)


def test_opcheck():
    inputs = new_inputs([3, 300, 65])
    inputs.k_cache.nan_to_num_(0.0)  # opcheck compares inputs before and after the call
    plan_args = (inputs.cache_seqlens, S_Q * H_Q // H_KV, H_KV, 64, 0)
    opcheck(torch.ops.flash_mla.get_decode_metadata.default, plan_args)
    metadata, num_splits = torch.ops.flash_mla.get_decode_metadata(*plan_args)
    decode_args = (
        inputs.q,
        inputs.k_cache,
        inputs.block_table,
        inputs.cache_seqlens,
        D_V,
        metadata,
        num_splits,
        576**-0.5,
        True,
    )
    opcheck(torch.ops.flash_mla.dense_decode_fwd.default, decode_args)


def test_cuda_graph_replay_after_inplace_update():
    inputs = new_inputs([1, 130, 4000, 0, 64])
    metadata, num_splits = flash_mla.get_mla_metadata(inputs.cache_seqlens, S_Q * H_Q // H_KV, H_KV)
    graph, (out, lse) = capture(lambda: decode(inputs, metadata, num_splits))
    for seed in (21, 22):
        refill_(inputs, seed=seed)  # same lengths, new q and cache values, same storage
        graph.replay()
        torch.cuda.synchronize()
        check_against_reference(inputs, out, lse)


def test_cuda_graph_captures_planning():
    capacity = [4096, 300, 2000, 70]
    inputs = new_inputs([100, 1, 2000, 64], capacity=capacity)

    def step():
        metadata, num_splits = flash_mla.get_mla_metadata(
            inputs.cache_seqlens, S_Q * H_Q // H_KV, H_KV
        )
        return decode(inputs, metadata, num_splits)

    graph, (out, lse) = capture(step)
    for seed, seqlens in ((31, [4096, 0, 1, 70]), (32, [5, 300, 1999, 2])):
        refill_(inputs, seqlens, seed=seed)  # new lengths: the captured planner must follow
        graph.replay()
        torch.cuda.synchronize()
        check_against_reference(inputs, out, lse)


def test_cuda_graph_with_sched_meta():
    inputs = new_inputs([7, 900, 65])
    sched, _ = flash_mla.get_mla_metadata()
    decode(inputs, sched, None)  # the first call plans and stores the plan
    graph, (out, lse) = capture(lambda: decode(inputs, sched, None))
    refill_(inputs, seed=41)
    graph.replay()
    torch.cuda.synchronize()
    check_against_reference(inputs, out, lse)


def test_cuda_graph_replays_sequences_cut_in_two():
    # Many sequences: the plan cuts some in exactly two (the combine's few-splits path, launched
    # by programmatic dependent launch); three replays of one graph, each on new values, with
    # the outputs poisoned before each.
    lengths = [(i * 977) % 3000 + 64 for i in range(96)]
    inputs = new_inputs(lengths)
    metadata, num_splits = flash_mla.get_mla_metadata(inputs.cache_seqlens, S_Q * H_Q // H_KV, H_KV)
    splits = (num_splits[1:] - num_splits[:-1]).cpu()
    assert bool((splits == 2).any()), "the plan has no sequence cut in two"
    graph, (out, lse) = capture(lambda: decode(inputs, metadata, num_splits))
    for seed in (51, 52, 53):
        refill_(inputs, seed=seed)
        out.fill_(float("nan"))
        lse.fill_(float("nan"))
        graph.replay()
        torch.cuda.synchronize()
        check_against_reference(inputs, out, lse)
