"""torch.compile and CUDA-graph capture of the sparse-prefill operator (flash_mla_sparse_fwd)."""

import pytest
import torch

if not torch.cuda.is_available():
    pytest.skip("flash_mla tests need a CUDA GPU", allow_module_level=True)

import flash_mla  # noqa: E402
from flash_mla.testing import (  # noqa: E402
    SparsePrefillInputs,
    check_sparse_prefill_against_reference,
    make_sparse_prefill_inputs,
    refill_sparse_prefill_,
)
from compile_graph_helpers import BACKENDS, capture, opcheck  # noqa: E402

D_V = 512
S_Q, S_KV, TOPK, H_Q = 62, 1592, 384, 64


def new_inputs(d_qk: int = 576, seed: int = 0, **kwargs) -> SparsePrefillInputs:
    args = dict(
        h_q=H_Q,
        d_qk=d_qk,
        invalid_fraction=0.05,
        all_invalid_fraction=0.05,
        topk_length="random",
        sink="mixed",
        strided=True,
        seed=seed,
    )
    args.update(kwargs)
    return make_sparse_prefill_inputs(S_Q, S_KV, TOPK, **args)


def prefill(inputs: SparsePrefillInputs):
    return flash_mla.flash_mla_sparse_fwd(*inputs.args(), **inputs.kwargs())


def check(inputs: SparsePrefillInputs, out, max_logits, lse) -> None:
    check_sparse_prefill_against_reference(inputs, out, max_logits, lse)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("d_qk", [576, 512])
def test_compile_fullgraph_matches_eager(backend: str, d_qk: int):
    torch._dynamo.reset()
    inputs = new_inputs(d_qk)

    def step(q, kv, indices, sink, lengths):
        out, max_logits, lse = flash_mla.flash_mla_sparse_fwd(
            q, kv, indices, inputs.sm_scale, attn_sink=sink, topk_length=lengths
        )
        return out.float() * 2.0, max_logits - 1.0, lse + 1.0

    args = (inputs.q, inputs.kv, inputs.indices, inputs.attn_sink, inputs.topk_length)
    compiled = torch.compile(step, fullgraph=True, backend=backend)
    got = compiled(*args)
    eager = step(*args)
    for c, e in zip(got, eager):
        torch.testing.assert_close(c, e, rtol=0, atol=0, equal_nan=True)
    out_c, max_c, lse_c = got
    check(inputs, (out_c / 2.0).to(torch.bfloat16), max_c + 1.0, lse_c - 1.0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_compile_fullgraph_default_scale_and_no_options(backend: str):
    """sm_scale None (d_qk ** -0.5 from the traced shape) and no sink / topk_length."""
    torch._dynamo.reset()
    inputs = new_inputs(512, seed=3, sink="none", topk_length=None)

    def step(q, kv, indices):
        return flash_mla.flash_mla_sparse_fwd(q, kv, indices, None)

    compiled = torch.compile(step, fullgraph=True, backend=backend)
    out, max_logits, lse = compiled(inputs.q, inputs.kv, inputs.indices)
    check(inputs, out, max_logits, lse)


def test_opcheck():
    # opcheck compares the inputs before and after the call: no NaN anywhere in them.
    inputs = new_inputs(576, seed=5, poison_unused=False, strided=False, sink="finite")
    args = (
        inputs.q,
        inputs.kv,
        inputs.indices,
        inputs.sm_scale,
        D_V,
        inputs.attn_sink,
        inputs.topk_length,
    )
    opcheck(torch.ops.flash_mla.sparse_prefill_fwd.default, args)
    opcheck(
        torch.ops.flash_mla.sparse_prefill_fwd.default,
        (inputs.q, inputs.kv, inputs.indices, inputs.sm_scale, D_V, None, None),
    )


@pytest.mark.parametrize("d_qk", [576, 512])
def test_cuda_graph_replay_after_inplace_update(d_qk: int):
    inputs = new_inputs(d_qk, seed=7)
    graph, (out, max_logits, lse) = capture(lambda: prefill(inputs))
    for seed, lengths in ((21, None), (22, [0, TOPK, 1, 200, -1] * 12 + [TOPK, 7])):
        # Same storage and indices; new q / kv values and (second round) new lengths in place.
        refill_sparse_prefill_(inputs, seed=seed, topk_length=lengths)
        graph.replay()
        torch.cuda.synchronize()
        check(inputs, out, max_logits, lse)
