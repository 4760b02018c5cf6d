"""Sparse MLA prefill (spec section 3, flash_mla_sparse_fwd) against the float64 PyTorch reference
in flash_mla.testing.

Every case draws fresh random data through flash_mla.testing.make_sparse_prefill_inputs: index
lists of distinct random tokens (as FlashMLA's test draws them; padded with invalid entries where
s_kv < topk), mixed with -1 and out-of-range entries, some query tokens with no valid entry at all,
topk_length with 0, negative and past-topk values, NaN in every kv row that no counted entry names
(and in the rows just before and after kv), q / kv / indices as FlashMLA-style strided views. The
outputs come from the caching allocator right after NaN-filled blocks of the same sizes were freed,
so an element the kernel does not write shows up as NaN. A (token, head) without a valid entry
must give exactly out = 0, max_logits = -inf and lse = +inf.

The grid covers FlashMLA's correctness shapes (its test_flash_mla_sparse_prefill.py) without the
full product: for each d_qk (512 and 576) a list of cases in which every h_q, (s_kv, topk) pair,
s_q, sink mode, topk_length mode and value style appears (test_grid_covers_every_value).
"""

import math
import random

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
from grid_helpers import balanced, case_seed  # noqa: E402

D_V = 512
D_QKS = (512, 576)
HEADS = (1, 16, 32, 64, 128)
# FlashMLA's (s_kv, topk) pairs: regular, irregular, out-of-bounds top-k (s_kv < topk), blocks
# without any valid index; then top-k values that are not multiples of 64.
PAIRS = (
    (128, 128),
    (256, 256),
    (512, 512),
    (592, 128),
    (1840, 256),
    (1592, 384),
    (1521, 512),
    (95, 128),
    (153, 256),
    (114, 384),
    (32, 2048),
    (64, 8192),
    (333, 100),
    (2500, 1000),
    (640, 1000),
)
S_QS = (1, 62, 213, 1024)
SINKS = ("none", "flashmla", "none", "finite", "mixed")
LENGTHS = ("none", "random")
# "normal": N(0, 1) values, sm_scale d_qk ** -0.5; "flashmla": FlashMLA's test values (N(0, 0.1^2)
# plus a random offset in +-0.05, clamped to +-10), sm_scale 0.5.
VALUES = ("normal", "flashmla")
CASES_PER_D_QK = 30


def _grid() -> list[dict]:
    rng = random.Random(20261123)
    cases = []
    for d_qk in D_QKS:
        n = CASES_PER_D_QK
        columns = dict(
            h_q=balanced(HEADS, n, rng),
            pair=balanced(PAIRS, n, rng),
            s_q=balanced(S_QS, n, rng),
            sink=balanced(SINKS, n, rng),
            lengths=balanced(LENGTHS, n, rng),
            values=balanced(VALUES, n, rng),
            strided=balanced((False, True), n, rng),
            invalid=balanced((0.0, 0.05, 0.3), n, rng),
            all_invalid=balanced((0.0, 0.0, 0.1), n, rng),
            duplicates=balanced((False, False, False, True), n, rng),
        )
        for k in range(n):
            case = {name: values[k] for name, values in columns.items()}
            case["d_qk"] = d_qk
            cases.append(case)
    return cases


GRID = _grid()


def _case_id(case: dict) -> str:
    s_kv, topk = case["pair"]
    flags = "".join(
        flag
        for flag, on in (
            ("-strided", case["strided"]),
            ("-dup", case["duplicates"]),
            (f"-inv{case['invalid']}", case["invalid"]),
            (f"-empty{case['all_invalid']}", case["all_invalid"]),
        )
        if on
    )
    return (
        f"d{case['d_qk']}-h{case['h_q']}-skv{s_kv}-k{topk}-sq{case['s_q']}-sink_{case['sink']}"
        f"-len_{case['lengths']}-{case['values']}{flags}"
    )


def build(case: dict, seed: int, **overrides) -> SparsePrefillInputs:
    rng = random.Random(seed)
    s_kv, topk = case["pair"]
    values = {}
    if case["values"] == "flashmla":
        values = dict(
            value_scale=0.1, value_offset=rng.uniform(-0.05, 0.05), value_clamp=10.0, sm_scale=0.5
        )
    kwargs = dict(
        h_q=case["h_q"],
        d_qk=case["d_qk"],
        invalid_fraction=case["invalid"],
        all_invalid_fraction=case["all_invalid"],
        duplicates=case["duplicates"],
        topk_length=None if case["lengths"] == "none" else "random",
        sink=case["sink"],
        strided=case["strided"],
        seed=seed,
        **values,
    )
    kwargs.update(overrides)
    return make_sparse_prefill_inputs(case["s_q"], s_kv, topk, **kwargs)


def poison_free_memory(inputs: SparsePrefillInputs) -> None:
    """Frees NaN-filled blocks of the sizes of out, max_logits and lse, which the caching
    allocator hands to the operator's next allocations of those sizes."""
    s_q, h_q = inputs.s_q, inputs.h_q
    blocks = [torch.full((s_q, h_q, D_V), math.nan, dtype=torch.bfloat16, device="cuda")]
    for _ in range(2):  # max_logits and lse
        blocks.append(torch.full((s_q, h_q), math.nan, dtype=torch.float32, device="cuda"))
    del blocks


def run(inputs: SparsePrefillInputs, **overrides):
    kwargs = inputs.kwargs()
    kwargs.update(overrides)
    return flash_mla.flash_mla_sparse_fwd(*inputs.args(), **kwargs)


def run_and_check(inputs: SparsePrefillInputs, **check_kwargs):
    poison_free_memory(inputs)
    out, max_logits, lse = run(inputs)
    s_q, h_q = inputs.s_q, inputs.h_q
    assert out.shape == (s_q, h_q, D_V) and out.dtype == torch.bfloat16 and out.is_contiguous()
    for t in (max_logits, lse):
        assert t.shape == (s_q, h_q) and t.dtype == torch.float32 and t.is_contiguous()
    check_sparse_prefill_against_reference(inputs, out, max_logits, lse, **check_kwargs)
    return out, max_logits, lse


@pytest.mark.parametrize("case", GRID, ids=[_case_id(c) for c in GRID])
def test_matches_reference(case: dict):
    inputs = build(case, case_seed(_case_id(case)))
    run_and_check(inputs)


def test_grid_covers_every_value():
    for d_qk in D_QKS:
        cases = [c for c in GRID if c["d_qk"] == d_qk]
        for key, values in (
            ("h_q", HEADS),
            ("pair", PAIRS),
            ("s_q", S_QS),
            ("sink", SINKS),
            ("lengths", LENGTHS),
            ("values", VALUES),
            ("strided", (False, True)),
            ("duplicates", (False, True)),
            ("all_invalid", (0.0, 0.1)),
        ):
            for value in values:
                assert any(case[key] == value for case in cases), (d_qk, key, value)
        # Both topk values that are not multiples of 64 come with both d_qk.
        assert {c["pair"][1] for c in cases} >= {100, 1000}


@pytest.mark.parametrize(
    "d_qk,h_q,s_kv,topk", [(512, 64, 256, 256), (576, 128, 592, 128)], ids=["d512-h64", "d576-h128"]
)
def test_seqlen_q_70000(d_qk: int, h_q: int, s_kv: int, topk: int):
    """s_q beyond any grid-dimension limit (FlashMLA's corner case), with sink and topk_length;
    the reference and the check run chunk by chunk over the query tokens."""
    inputs = make_sparse_prefill_inputs(
        70000,
        s_kv,
        topk,
        h_q=h_q,
        d_qk=d_qk,
        invalid_fraction=0.05,
        all_invalid_fraction=0.01,
        topk_length="random",
        sink="flashmla",
        seed=70000 + d_qk,
    )
    run_and_check(inputs, max_chunk_bytes=2 << 30)


@pytest.mark.parametrize("d_qk", D_QKS)
def test_no_valid_token(d_qk: int):
    """All-invalid index lists, and valid lists cut to nothing by topk_length 0 or negative:
    out exactly 0, max_logits -inf, lse +inf, with the sink on (every mode) and off."""
    for sink in ("none", "mixed", "+inf", "-inf"):
        for all_invalid, lengths in ((1.0, None), (0.0, [0, -1, -(2**31), 0, -5] * 10)):
            inputs = make_sparse_prefill_inputs(
                50,
                300,
                128,
                h_q=16,
                d_qk=d_qk,
                all_invalid_fraction=all_invalid,
                topk_length=lengths,
                sink=sink,
                seed=11 + d_qk,
            )
            out, max_logits, lse = run_and_check(inputs)
            assert bool((out == 0).all()), "no valid token: out must be exactly 0"
            assert bool((max_logits == -math.inf).all()), "no valid token: max_logits must be -inf"
            assert bool((lse == math.inf).all()), "no valid token: lse must be +inf"


@pytest.mark.parametrize("d_qk", D_QKS)
def test_attn_sink_extremes(d_qk: int):
    """+inf on every head gives out = 0; -inf changes nothing (bit for bit); neither changes
    max_logits or lse."""
    inputs = make_sparse_prefill_inputs(
        100, 1000, 512, h_q=64, d_qk=d_qk, invalid_fraction=0.1, topk_length="random", seed=13
    )
    out_plain, max_plain, lse_plain = run_and_check(inputs)
    for mode in ("+inf", "-inf"):
        inputs.attn_sink = torch.full((64,), float(mode), dtype=torch.float32, device="cuda")
        out, max_logits, lse = run_and_check(inputs)
        torch.testing.assert_close(max_logits, max_plain, rtol=0, atol=0)
        torch.testing.assert_close(lse, lse_plain, rtol=0, atol=0)
        if mode == "+inf":
            assert bool((out == 0).all())
        else:
            torch.testing.assert_close(out, out_plain, rtol=0, atol=0)


@pytest.mark.parametrize("d_qk", D_QKS)
def test_duplicate_indices_count_twice(d_qk: int):
    """A token listed twice counts twice: listing every token twice leaves max_logits unchanged
    and raises lse by log 2 (out then matches the reference, whose sink factor sees that lse).
    max_logits only to fp32 rounding: the kernel's two score warpgroups sum the 64-column boxes
    of q.k in different orders, so one token's logit may differ in its last bit between the
    positions it is listed at."""
    once = make_sparse_prefill_inputs(64, 700, 256, h_q=32, d_qk=d_qk, sink="finite", seed=17)
    out1, max1, lse1 = run_and_check(once)
    twice = SparsePrefillInputs(
        q=once.q,
        kv=once.kv,
        indices=torch.cat([once.indices, once.indices.flip(-1)], dim=-1).contiguous(),
        sm_scale=once.sm_scale,
        attn_sink=once.attn_sink,
        topk_length=None,
        kv_storage=once.kv_storage,
    )
    out2, max2, lse2 = run_and_check(twice)
    torch.testing.assert_close(max2, max1, rtol=2.0**-20, atol=0)
    torch.testing.assert_close(lse2, lse1 + math.log(2.0), rtol=0, atol=1e-5)


def test_deterministic():
    case = dict(
        h_q=128,
        d_qk=576,
        invalid_fraction=0.1,
        all_invalid_fraction=0.05,
        topk_length="random",
        sink="mixed",
        seed=19,
    )
    inputs = make_sparse_prefill_inputs(213, 1840, 2048, **case)
    first = run(inputs)
    for _ in range(2):
        again = run(inputs)
        for a, b in zip(first, again):
            torch.testing.assert_close(a, b, rtol=0, atol=0, equal_nan=True)


@pytest.mark.parametrize("d_qk", D_QKS)
def test_default_and_explicit_scale(d_qk: int):
    """sm_scale None means d_qk ** -0.5; other scales (small, large) match the reference."""
    inputs = make_sparse_prefill_inputs(62, 512, 512, h_q=16, d_qk=d_qk, seed=23)
    explicit = run(inputs)
    default = flash_mla.flash_mla_sparse_fwd(
        inputs.q, inputs.kv, inputs.indices, None, **inputs.kwargs()
    )
    for a, b in zip(explicit, default):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    for scale in (0.01, 0.3):
        inputs.sm_scale = scale
        run_and_check(inputs)


def test_runs_on_the_current_stream():
    inputs = make_sparse_prefill_inputs(
        213, 1521, 512, h_q=64, d_qk=512, topk_length="random", sink="finite", seed=29
    )
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        poison_free_memory(inputs)
        out, max_logits, lse = run(inputs)
    torch.cuda.current_stream().wait_stream(stream)
    check_sparse_prefill_against_reference(inputs, out, max_logits, lse)


def test_empty_seqlen_q():
    """s_q = 0: empty outputs of the right shapes, nothing launched."""
    inputs = make_sparse_prefill_inputs(1, 64, 64, h_q=16, d_qk=576, seed=31)
    out, max_logits, lse = flash_mla.flash_mla_sparse_fwd(
        inputs.q[:0], inputs.kv, inputs.indices[:0], inputs.sm_scale, attn_sink=None
    )
    assert out.shape == (0, 16, D_V) and out.dtype == torch.bfloat16
    assert max_logits.shape == (0, 16) and lse.shape == (0, 16)
