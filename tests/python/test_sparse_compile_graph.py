"""torch.compile and CUDA-graph capture of the sparse-decode operators."""

import pytest
import torch

if not torch.cuda.is_available():
    pytest.skip("flash_mla tests need a CUDA GPU", allow_module_level=True)

import flash_mla  # noqa: E402
from flash_mla.testing import (  # noqa: E402
    SparseDecodeInputs,
    SparseSourceSpec,
    check_sparse_decode_against_reference,
    make_sparse_decode_inputs,
    refill_sparse_,
)
from compile_graph_helpers import BACKENDS, capture, compiled_matches_eager, opcheck  # noqa: E402

D_V = 512
S_Q, H_Q = 2, 64


def new_inputs(layout: str = "v32", extra: bool = True, seed: int = 0, **kwargs):
    main = SparseSourceSpec(topk=576, page_block_size=61, topk_length=[576, 100, 0, 333, 576])
    extra_spec = None
    if extra:
        extra_spec = SparseSourceSpec(topk=64, page_block_size=2, topk_length=[64, 0, 5, 64, 1])
    return make_sparse_decode_inputs(
        main,
        b=5,
        s_q=S_Q,
        h_q=H_Q,
        layout=layout,
        extra=extra_spec,
        sink="mixed",
        seed=seed,
        **kwargs,
    )


def tensor_plan(inputs: SparseDecodeInputs):
    return flash_mla.get_mla_metadata(
        inputs.cache_seqlens,
        S_Q * H_Q,
        1,
        H_Q,
        inputs.is_fp8_kvcache,
        inputs.main.indices.shape[-1],
    )


def decode(inputs: SparseDecodeInputs, metadata, num_splits):
    return flash_mla.flash_mla_with_kvcache(
        inputs.q, inputs.main.k_cache, None, None, D_V, metadata, num_splits, **inputs.kwargs()
    )


def check_against_reference(inputs: SparseDecodeInputs, out, lse) -> None:
    check_sparse_decode_against_reference(inputs, out, lse, D_V)


def _tensors(inputs: SparseDecodeInputs) -> tuple:
    extra = inputs.extra
    return (
        inputs.q,
        inputs.main.k_cache,
        inputs.main.indices,
        inputs.main.topk_length,
        inputs.attn_sink,
        extra.k_cache,
        extra.indices,
        extra.topk_length,
    )


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("layout", ["v32", "model1"])
def test_compile_fullgraph_matches_eager(backend: str, layout: str):
    torch._dynamo.reset()
    inputs = new_inputs(layout)
    metadata, num_splits = tensor_plan(inputs)

    def step(q, k_cache, indices, topk_length, sink, extra_k, extra_idx, extra_len, md, ns):
        out, lse = flash_mla.flash_mla_with_kvcache(
            q,
            k_cache,
            None,
            None,
            D_V,
            md,
            ns,
            is_fp8_kvcache=True,
            indices=indices,
            attn_sink=sink,
            extra_k_cache=extra_k,
            extra_indices_in_kvcache=extra_idx,
            topk_length=topk_length,
            extra_topk_length=extra_len,
        )
        return out.float() * 2.0, lse + 1.0

    args = _tensors(inputs) + (metadata, num_splits)
    out_c, lse_c = compiled_matches_eager(step, args, backend)
    check_against_reference(inputs, (out_c / 2.0).to(torch.bfloat16), lse_c - 1.0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_compile_fullgraph_with_planning_inside(backend: str):
    """Both planning paths traced: the tensor form of get_mla_metadata, and no plan at all
    (flash_mla_with_kvcache plans with the real lengths)."""
    torch._dynamo.reset()
    inputs = new_inputs("bf16", seed=3)

    def step(q, k_cache, indices, topk_length, sink, extra_k, extra_idx, extra_len, seqlens):
        kwargs = dict(
            indices=indices,
            attn_sink=sink,
            extra_k_cache=extra_k,
            extra_indices_in_kvcache=extra_idx,
            topk_length=topk_length,
            extra_topk_length=extra_len,
        )
        md, ns = flash_mla.get_mla_metadata(
            seqlens, q.shape[1] * q.shape[2], 1, q.shape[2], False, indices.shape[-1]
        )
        first = flash_mla.flash_mla_with_kvcache(q, k_cache, None, None, D_V, md, ns, **kwargs)
        second = flash_mla.flash_mla_with_kvcache(q, k_cache, None, None, D_V, **kwargs)
        return first, second

    compiled = torch.compile(step, fullgraph=True, backend=backend)
    (out1, lse1), (out2, lse2) = compiled(*_tensors(inputs), inputs.cache_seqlens)
    check_against_reference(inputs, out1, lse1)
    check_against_reference(inputs, out2, lse2)


def test_opcheck():
    # opcheck compares the inputs before and after the call: no NaN anywhere in them.
    inputs = new_inputs("v32", uint8=True, poison_unused=False, seed=5)
    inputs.attn_sink.nan_to_num_(posinf=3.0, neginf=-3.0)
    extra = inputs.extra
    plan_args = (
        inputs.q,
        S_Q,
        H_Q,
        inputs.main.indices.shape[-1],
        inputs.main.topk_length,
        extra.indices.shape[-1],
        extra.topk_length,
        0,
    )
    opcheck(torch.ops.flash_mla.get_sparse_decode_metadata.default, plan_args)
    metadata, num_splits = torch.ops.flash_mla.get_sparse_decode_metadata(*plan_args)
    decode_args = (
        inputs.q,
        inputs.main.k_cache,
        inputs.main.indices,
        inputs.main.topk_length,
        inputs.attn_sink,
        metadata,
        num_splits,
        extra.k_cache,
        extra.indices,
        extra.topk_length,
        D_V,
        576**-0.5,
        True,
    )
    opcheck(torch.ops.flash_mla.sparse_decode_fwd.default, decode_args)


@pytest.mark.parametrize("layout", ["v32", "model1", "bf16"])
def test_cuda_graph_replay_after_inplace_update(layout: str):
    inputs = new_inputs(layout, seed=7)
    metadata, num_splits = tensor_plan(inputs)
    graph, (out, lse) = capture(lambda: decode(inputs, metadata, num_splits))
    for seed in (21, 22):
        refill_sparse_(inputs, seed=seed)  # same indices, new q and cache values, same storage
        graph.replay()
        torch.cuda.synchronize()
        check_against_reference(inputs, out, lse)


def test_cuda_graph_captures_planning():
    inputs = new_inputs("v32", seed=9)
    graph, (out, lse) = capture(lambda: decode(inputs, None, None))  # plans inside the graph
    for seed, lengths, extra_lengths in (
        (31, [0, 576, 576, 1, 576], [64, 64, 0, 0, 64]),
        (32, [5, 0, 300, 576, 2], [1, 2, 3, 4, 5]),
    ):
        # New lengths in place: the captured planner and kernel must follow them.
        refill_sparse_(inputs, seed=seed, topk_length=lengths, extra_topk_length=extra_lengths)
        graph.replay()
        torch.cuda.synchronize()
        check_against_reference(inputs, out, lse)


def test_cuda_graph_with_sched_meta():
    inputs = new_inputs("model1", seed=11)
    sched, _ = flash_mla.get_mla_metadata()
    decode(inputs, sched, None)  # the first call plans and stores the plan
    graph, (out, lse) = capture(lambda: decode(inputs, sched, None))
    refill_sparse_(inputs, seed=41)
    graph.replay()
    torch.cuda.synchronize()
    check_against_reference(inputs, out, lse)
