"""Sparse MLA decoding (spec section 2) against the float64 PyTorch reference in flash_mla.testing.

Every case draws fresh random data through flash_mla.testing.make_sparse_decode_inputs: pages
randomly permuted, index lists of distinct tokens mixed with -1 and out-of-range entries (some
query tokens with no valid entry at all, entries past topk_length pointing at NaN rows), NaN in
every cache row that no counted entry names and in the gaps between blocks and rows, q and
indices as strided views, FP8 caches as float8_e4m3fn or uint8. The outputs come from the
caching allocator right after NaN-filled blocks of the same sizes were freed, so an element the
kernel does not write shows up as NaN.

The grid is a covering subset of formats x page sizes x topk x h_q x s_q x batch sizes (each
value several times, not the full product); every case runs two "layers" on one plan (new q and
cache values, same indices), cycling through the two get_mla_metadata forms and no plan at all.
"""

import math
import random

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
from grid_helpers import balanced, case_seed  # noqa: E402

D_V = 512
# name -> (layout, d_qk)
FORMATS = {
    "v32": ("v32", 576),
    "model1": ("model1", 512),
    "bf16_576": ("bf16", 576),
    "bf16_512": ("bf16", 512),
}
PAGES = (1, 2, 53, 61, 64, 69, 576)
TOPKS = (1, 64, 100, 576, 2048)
HEADS = (1, 8, 16, 32, 64, 128)
BATCHES = (1, 2, 7, 33, 74, 128, 321)
SINKS = ("none", "mixed", "finite", "+inf", "-inf", "none")
FORMS = ("tensors", "sched_meta", "none")
# Index entries (b * s_q * (topk + extra_topk)) per case: keeps the float64 reference quick.
ENTRY_BUDGET = 600_000
NUM_GRID_CASES = 48


def _lengths(rng: random.Random, b: int, topk: int, mode: str):
    if mode == "none":
        return None
    if mode == "zeros":
        return [0] * b
    pool = [0, topk, topk + 5, -1, max(topk - 1, 0)] + [rng.randint(0, topk) for _ in range(4)]
    return [rng.choice(pool) for _ in range(b)]


def _source(rng: random.Random, layout: str, b: int, topk: int, page: int, lengths_mode: str):
    return SparseSourceSpec(
        topk=topk,
        page_block_size=page,
        topk_length=_lengths(rng, b, topk, lengths_mode),
        invalid_fraction=rng.choice([0.0, 0.05, 0.3]),
        all_invalid_fraction=rng.choice([0.0, 0.0, 0.15]),
        spare_blocks=rng.randint(0, 3),
        block_gap=rng.choice([0, 1, 3]),
        token_pad={"bf16": rng.choice([0, 64]), "v32": rng.choice([0, 16, 48]), "model1": 0}[
            layout
        ],
        indices_pad=rng.choice([0, 5]),
    )


def _grid() -> list[dict]:
    rng = random.Random(20261122)
    n = NUM_GRID_CASES
    columns = dict(
        fmt=balanced(list(FORMATS), n, rng),
        page=balanced(PAGES, n, rng),
        topk=balanced(TOPKS, n, rng),
        h_q=balanced(HEADS, n, rng),
        s_q=balanced((1, 2, 3, 4), n, rng),
        b=balanced(BATCHES, n, rng),
        extra=balanced((None, None, "extra"), n, rng),
        sink=balanced(SINKS, n, rng),
        lengths=balanced(("none", "random", "random", "zeros"), n, rng),
        form=balanced(FORMS, n, rng),
    )
    cases = []
    for k in range(n):
        case = {name: values[k] for name, values in columns.items()}
        case["extra_topk"] = rng.choice((64, 100, 576)) if case["extra"] else 0
        if case["lengths"] == "zeros" and not case["extra"]:
            case["lengths"] = "random"  # all-empty batches are test_no_valid_token's
        case["extra_page"] = rng.choice(PAGES) if case["extra"] else 0
        entries_per_seq = case["s_q"] * (case["topk"] + case["extra_topk"])
        while case["b"] > 1 and case["b"] * entries_per_seq > ENTRY_BUDGET:
            case["b"] = max(v for v in BATCHES if v < case["b"])
        cases.append(case)
    return cases


GRID = _grid()


def _case_id(case: dict) -> str:
    extra = f"+{case['extra_topk']}p{case['extra_page']}" if case["extra"] else ""
    return (
        f"{case['fmt']}-p{case['page']}-k{case['topk']}{extra}-h{case['h_q']}-s{case['s_q']}"
        f"-b{case['b']}-{case['sink']}-len_{case['lengths']}-{case['form']}"
    )


def poison_free_memory(inputs: SparseDecodeInputs) -> None:
    """Frees NaN-filled blocks of the sizes of out and lse, which the caching allocator hands
    to the operator's next allocations of those sizes."""
    b, s_q, h_q, _ = inputs.q.shape
    for shape, dtype in (((b, s_q, h_q, D_V), torch.bfloat16), ((b, h_q, s_q), torch.float32)):
        torch.full(shape, math.nan, dtype=dtype, device=inputs.q.device)


def plan(form: str, inputs: SparseDecodeInputs):
    b, s_q, h_q, _ = inputs.q.shape
    if form == "tensors":
        return flash_mla.get_mla_metadata(
            inputs.cache_seqlens,
            s_q * h_q,
            1,
            h_q,
            inputs.is_fp8_kvcache,
            inputs.main.indices.shape[-1],
        )
    if form == "sched_meta":
        return flash_mla.get_mla_metadata()
    return None, None


def run_sparse(inputs: SparseDecodeInputs, metadata, num_splits, softmax_scale=None, **overrides):
    kwargs = inputs.kwargs()
    kwargs.update(overrides)
    return flash_mla.flash_mla_with_kvcache(
        inputs.q,
        inputs.main.k_cache,
        None,
        None,
        D_V,
        metadata,
        num_splits,
        softmax_scale=softmax_scale,
        **kwargs,
    )


def run_and_check(inputs: SparseDecodeInputs, metadata, num_splits, softmax_scale=None) -> None:
    poison_free_memory(inputs)
    out, lse = run_sparse(inputs, metadata, num_splits, softmax_scale)
    b, s_q, h_q, _ = inputs.q.shape
    assert out.shape == (b, s_q, h_q, D_V) and out.dtype == torch.bfloat16
    assert lse.shape == (b, h_q, s_q) and lse.dtype == torch.float32
    check_sparse_decode_against_reference(inputs, out, lse, D_V, softmax_scale=softmax_scale)


def build(case: dict, seed: int) -> SparseDecodeInputs:
    rng = random.Random(seed)
    layout, d_qk = FORMATS[case["fmt"]]
    b = case["b"]
    main = _source(rng, layout, b, case["topk"], case["page"], case["lengths"])
    extra = None
    if case["extra"]:
        extra = _source(
            rng, layout, b, case["extra_topk"], case["extra_page"], rng.choice(("none", "random"))
        )
    return make_sparse_decode_inputs(
        main,
        b=b,
        s_q=case["s_q"],
        h_q=case["h_q"],
        layout=layout,
        d_qk=d_qk,
        extra=extra,
        sink=case["sink"],
        uint8=layout != "bf16" and rng.random() < 0.35,
        q_pad=rng.choice([0, 64]),
        seed=seed,
    )


def check_two_layers(case: dict):
    """Runs a case twice on one plan, the second time ("layer") with the same indices, lengths
    and plan but new values; returns the metadata and the plan it held after the first layer."""
    seed = case_seed(_case_id(case))
    inputs = build(case, seed)
    metadata, num_splits = plan(case["form"], inputs)
    run_and_check(inputs, metadata, num_splits)
    first_plan = getattr(metadata, "tile_scheduler_metadata", None)
    refill_sparse_(inputs, seed=seed + 1)
    run_and_check(inputs, metadata, num_splits)
    return metadata, first_plan


@pytest.mark.parametrize("case", GRID, ids=[_case_id(c) for c in GRID])
def test_matches_reference(case: dict):
    metadata, first_plan = check_two_layers(case)
    if case["form"] == "sched_meta":
        assert metadata.have_initialized
        assert metadata.tile_scheduler_metadata is first_plan, "the stored plan must be reused"


def test_grid_covers_every_value():
    for key, values in (
        ("fmt", FORMATS),
        ("page", PAGES),
        ("topk", TOPKS),
        ("h_q", HEADS),
        ("s_q", (1, 2, 3, 4)),
        ("sink", SINKS),
        ("form", FORMS),
    ):
        for value in values:
            assert sum(case[key] == value for case in GRID) >= 2, (key, value)
    assert sum(case["b"] == 321 for case in GRID) >= 2
    assert sum(bool(case["extra"]) for case in GRID) >= 8


def _few_heads_cases() -> list[dict]:
    """h_q <= 32 runs the few-heads kernels (16 or 32 heads a CTA): both instances' edges and head
    counts between them, over all four cache formats."""
    rng = random.Random(20261123)
    cases = []
    for k, h_q in enumerate((1, 2, 3, 5, 7, 8, 13, 15, 16, 17, 20, 24, 31, 32, 32, 11)):
        fmt = list(FORMATS)[k % len(FORMATS)]
        extra = k % 3 == 1
        case = dict(
            fmt=fmt,
            page=rng.choice(PAGES),
            topk=rng.choice((1, 64, 100, 576, 2048)),
            h_q=h_q,
            s_q=1 + k % 4,
            b=rng.choice((1, 2, 7, 33, 74)),
            extra="extra" if extra else None,
            extra_topk=rng.choice((64, 100, 576)) if extra else 0,
            extra_page=rng.choice(PAGES) if extra else 0,
            sink=SINKS[k % len(SINKS)],
            lengths=("none", "random", "random")[k % 3],
            form=FORMS[k % len(FORMS)],
        )
        cases.append(case)
    return cases


FEW_HEADS = _few_heads_cases()


@pytest.mark.parametrize("case", FEW_HEADS, ids=[_case_id(c) for c in FEW_HEADS])
def test_few_heads(case: dict):
    check_two_layers(case)


@pytest.mark.parametrize(
    "fmt,h_q,s_q,b,page,extra_topk",
    [
        ("v32", 128, 2, 2, 64, 0),
        ("model1", 64, 1, 3, 61, 2048),
        ("v32", 16, 2, 3, 64, 0),
        ("model1", 32, 1, 3, 61, 2048),
    ],
    ids=["v32-h128", "model1-h64-extra", "v32-h16", "model1-h32-extra"],
)
def test_topk_16384(fmt: str, h_q: int, s_q: int, b: int, page: int, extra_topk: int):
    layout, d_qk = FORMATS[fmt]
    topk = 16384
    main = SparseSourceSpec(
        topk=topk,
        page_block_size=page,
        seq_tokens=[20000, 9000, 16384][:b],
        topk_length=[topk, 12000, 5][:b] if extra_topk else None,
    )
    extra = None
    if extra_topk:
        extra = SparseSourceSpec(topk=extra_topk, page_block_size=2, topk_length=[100, 0, 2048])
    inputs = make_sparse_decode_inputs(
        main, b=b, s_q=s_q, h_q=h_q, layout=layout, d_qk=d_qk, extra=extra, sink="mixed", seed=7
    )
    metadata, _ = flash_mla.get_mla_metadata()
    run_and_check(inputs, metadata, None)


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_no_valid_token(fmt: str):
    """All-invalid index lists and topk_length 0 everywhere: out exactly 0, lse +inf, with and
    without the extra cache and the sink."""
    layout, d_qk = FORMATS[fmt]
    b, s_q, h_q = 4, 2, 16
    for extra_on in (False, True):
        main = SparseSourceSpec(topk=64, page_block_size=61, all_invalid_fraction=1.0)
        extra = None
        if extra_on:
            extra = SparseSourceSpec(topk=100, page_block_size=2, topk_length=[0] * b)
        inputs = make_sparse_decode_inputs(
            main,
            b=b,
            s_q=s_q,
            h_q=h_q,
            layout=layout,
            d_qk=d_qk,
            extra=extra,
            sink="mixed",
            seed=11 + extra_on,
        )
        poison_free_memory(inputs)
        out, lse = run_sparse(inputs, None, None)
        assert bool((out == 0).all()), "no valid token: out must be exactly 0"
        assert bool((lse == math.inf).all()), "no valid token: lse must be +inf"
        check_sparse_decode_against_reference(inputs, out, lse, D_V)


@pytest.mark.parametrize("mode", ["+inf", "-inf", "finite"])
def test_attn_sink_modes(mode: str):
    main = SparseSourceSpec(topk=576, page_block_size=64, topk_length=[576, 0, 300])
    inputs = make_sparse_decode_inputs(main, b=3, s_q=2, h_q=64, layout="v32", sink=mode, seed=13)
    poison_free_memory(inputs)
    out, lse = run_sparse(inputs, None, None)
    check_sparse_decode_against_reference(inputs, out, lse, D_V)
    if mode == "+inf":
        assert bool((out == 0).all())
    if mode == "-inf":
        # The sink must change nothing: the same call without it gives the same result.
        out_plain, lse_plain = run_sparse(inputs, None, None, attn_sink=None)
        torch.testing.assert_close(out, out_plain, rtol=0, atol=0)
        torch.testing.assert_close(lse, lse_plain, rtol=0, atol=0)


@pytest.mark.parametrize("softmax_scale", [0.02, 0.2])
def test_explicit_softmax_scale(softmax_scale: float):
    main = SparseSourceSpec(topk=100, page_block_size=53)
    inputs = make_sparse_decode_inputs(main, b=5, s_q=1, h_q=32, layout="model1", seed=17)
    run_and_check(inputs, None, None, softmax_scale=softmax_scale)


def test_metadata_forms_agree():
    """The three ways to plan give correct results for one batch; a tensor-form plan (made
    without the real lengths) and a plan from a later layer's lengths stay correct."""
    main = SparseSourceSpec(topk=2048, page_block_size=64, topk_length=[2048, 10, 0, 1500, 700])
    extra = SparseSourceSpec(topk=576, page_block_size=69, topk_length=[5, 576, 0, 600, 100])
    inputs = make_sparse_decode_inputs(
        main, b=5, s_q=2, h_q=128, layout="v32", extra=extra, sink="finite", seed=19
    )
    for form in FORMS:
        metadata, num_splits = plan(form, inputs)
        run_and_check(inputs, metadata, num_splits)
    # Reuse across "layers" whose lengths changed: any plan of the right size stays correct.
    metadata, num_splits = plan("tensors", inputs)
    sched, _ = flash_mla.get_mla_metadata()
    run_and_check(inputs, sched, None)
    refill_sparse_(
        inputs, seed=23, topk_length=[0, 2048, 2048, 1, 64], extra_topk_length=[576, 0, 1, 2, 576]
    )
    run_and_check(inputs, metadata, num_splits)
    run_and_check(inputs, sched, None)


def test_metadata_shapes():
    num_sms = torch.cuda.get_device_properties(0).multi_processor_count
    seqlens = torch.tensor([0, 5, 7000, 64, 3], dtype=torch.int32, device="cuda")
    for s_q, h_q in [(1, 128), (2, 128), (1, 64), (4, 16), (3, 1), (2, 200)]:
        metadata, num_splits = flash_mla.get_mla_metadata(seqlens, s_q * h_q, 1, h_q, True, 2048)
        assert metadata.dtype == torch.int32 and num_splits.dtype == torch.int32
        expected_parts = max(1, num_sms // (-(-h_q // 64) * s_q))
        assert metadata.shape == (expected_parts, 8), (s_q, h_q, metadata.shape)
        assert num_splits.shape == (seqlens.numel() + 1,)
        splits = num_splits.tolist()
        assert splits[0] == 0 and all(a < b for a, b in zip(splits, splits[1:])), splits


def test_block_table_and_cache_seqlens_are_ignored():
    """Callers (vLLM) may pass their dense arguments along; sparse decoding ignores them."""
    main = SparseSourceSpec(topk=64, page_block_size=64)
    inputs = make_sparse_decode_inputs(main, b=3, s_q=1, h_q=16, layout="v32", seed=29)
    table = torch.full((3, 4), -7, dtype=torch.int32, device="cuda")
    out, lse = flash_mla.flash_mla_with_kvcache(
        inputs.q, inputs.main.k_cache, table, inputs.cache_seqlens, D_V, **inputs.kwargs()
    )
    check_sparse_decode_against_reference(inputs, out, lse, D_V)


def test_sched_meta_rejects_other_config():
    main = SparseSourceSpec(topk=64, page_block_size=64)
    inputs = make_sparse_decode_inputs(main, b=2, s_q=1, h_q=16, layout="v32", seed=31)
    sched, _ = flash_mla.get_mla_metadata()
    run_and_check(inputs, sched, None)
    wider = make_sparse_decode_inputs(
        SparseSourceSpec(topk=128, page_block_size=64), b=2, s_q=1, h_q=16, layout="v32", seed=32
    )
    with pytest.raises(ValueError, match="topk"):
        run_sparse(wider, sched, None)
    extra = SparseSourceSpec(topk=64, page_block_size=2)
    with_extra = make_sparse_decode_inputs(
        main, b=2, s_q=1, h_q=16, layout="v32", extra=extra, seed=33
    )
    with pytest.raises(ValueError, match="extra_topk"):
        run_sparse(with_extra, sched, None)
    bf16 = make_sparse_decode_inputs(main, b=2, s_q=1, h_q=16, layout="bf16", seed=34)
    with pytest.raises(ValueError, match="is_fp8_kvcache"):
        run_sparse(bf16, sched, None)
    # A dense plan object cannot serve a sparse call either.
    dense_sched, _ = flash_mla.get_mla_metadata()
    dense_sched.have_initialized = True
    dense_sched.config = flash_mla.FlashMLASchedMeta.Config(
        2, 1, 16, 64, 1, False, False, None, None, None
    )
    with pytest.raises(ValueError, match="topk"):
        run_sparse(inputs, dense_sched, None)
    # The original configuration still runs.
    refill_sparse_(inputs, seed=35)
    run_and_check(inputs, sched, None)
