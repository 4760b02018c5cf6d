"""The oracle itself: flash_mla.testing's reference against a naive per-head softmax, and
check_close's acceptance rules. Runs on the CPU."""

import math

import pytest
import torch

testing = pytest.importorskip("flash_mla.testing")


def naive_decode(q, k_cache, block_table, cache_seqlens, d_v, scale, causal):
    b, s_q, h_q, d = q.shape
    page, h_kv = k_cache.shape[1], k_cache.shape[2]
    out = torch.zeros(b, s_q, h_q, d_v, dtype=torch.float64)
    lse = torch.full((b, h_q, s_q), math.inf, dtype=torch.float64)
    for i in range(b):
        n = int(cache_seqlens[i])
        for h in range(h_q):
            for j in range(s_q):
                visible = n - s_q + j + 1 if causal else n
                if visible <= 0:
                    continue
                rows = []
                for t in range(visible):
                    rows.append(
                        k_cache[int(block_table[i, t // page]), t % page, h // (h_q // h_kv)]
                    )
                kv = torch.stack(rows).double()
                logits = kv @ q[i, j, h].double() * scale
                lse[i, h, j] = torch.logsumexp(logits, 0)
                out[i, j, h] = torch.softmax(logits, 0) @ kv[:, :d_v]
    return out, lse


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("h_q,h_kv", [(4, 1), (6, 3)])
def test_reference_matches_naive(causal: bool, h_q: int, h_kv: int):
    inputs = testing.make_decode_inputs(
        [0, 1, 3, 70, 130],
        s_q=3,
        h_q=h_q,
        h_kv=h_kv,
        d_qk=24,
        dtype=torch.float32,
        device="cpu",
        page_block_size=8,
        seed=4,
    )
    ref_out, ref_lse = testing.reference_dense_decode(
        inputs.q, inputs.k_cache, inputs.block_table, inputs.cache_seqlens, 16, causal=causal
    )
    out, lse = naive_decode(
        inputs.q, inputs.k_cache, inputs.block_table, inputs.cache_seqlens, 16, 24**-0.5, causal
    )
    torch.testing.assert_close(ref_out.double(), out, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ref_lse.double(), lse, rtol=1e-6, atol=1e-6)
    assert (ref_lse[0] == math.inf).all() and (ref_out[0] == 0).all()


def test_inputs_hide_nan_only_past_the_lengths():
    inputs = testing.make_decode_inputs(
        [0, 5, 64, 65], s_q=1, h_q=2, h_kv=1, d_qk=8, dtype=torch.float32, device="cpu", seed=2
    )
    page = inputs.k_cache.shape[1]
    used = 0
    for i, n in enumerate(inputs.cache_seqlens.tolist()):
        for t in range(n):
            assert torch.isfinite(
                inputs.k_cache[int(inputs.block_table[i, t // page]), t % page]
            ).all()
        pages = (n + page - 1) // page
        if n % page:
            assert torch.isnan(
                inputs.k_cache[int(inputs.block_table[i, pages - 1]), n % page]
            ).all()
        unused = inputs.block_table[i, pages:]
        assert ((unused < 0) | (unused >= inputs.k_cache.shape[0])).all()
        used += n
    assert int(torch.isfinite(inputs.k_cache).all(-1).all(-1).sum()) == used


def test_check_close_rules():
    ref = torch.tensor([1.0, 100.0, 0.0, math.inf])
    testing.check_close(ref + torch.tensor([5e-4, 0.05, 9e-4, 0.0]), ref, testing.OUT_TOL)
    with pytest.raises(AssertionError, match="1 of 4 elements"):
        testing.check_close(ref + torch.tensor([2e-3, 0.0, 0.0, 0.0]), ref, testing.LSE_TOL)
    with pytest.raises(AssertionError, match="inf positions differ"):
        testing.check_close(torch.tensor([1.0, 100.0, 0.0, 5.0]), ref, testing.OUT_TOL)
    with pytest.raises(AssertionError, match="NaN positions differ"):
        testing.check_close(torch.tensor([math.nan, 100.0, 0.0, math.inf]), ref, testing.OUT_TOL)
    with pytest.raises(AssertionError, match="cosine"):
        x = torch.ones(10000)
        testing.check_close(x * 1.01, x, testing.Tolerance(abs_tol=1.0, rel_tol=0.0, cos_tol=1e-6))


def test_check_close_rounding_bound():
    """An element past the fixed tolerance passes only within its bound, and is counted."""
    ref = torch.tensor([0.01, 1.0, 0.0])
    actual = ref + torch.tensor([2e-3, 0.0, 0.0])
    with pytest.raises(AssertionError):
        testing.check_close(actual, ref, testing.OUT_TOL)
    bound = torch.tensor([3e-3, 0.0, 0.0], dtype=torch.float64)
    assert testing.check_close(actual, ref, testing.OUT_TOL, bound=bound) == 1
    with pytest.raises(AssertionError):
        testing.check_close(actual, ref, testing.OUT_TOL, bound=bound / 2)


def naive_sparse_decode(q, sources, scale, d_v, sink):
    """Per query and head: collect the counted rows one by one, softmax, sink factor."""
    b, s_q, h_q, _ = q.shape
    out = torch.zeros(b, s_q, h_q, d_v, dtype=torch.float64)
    lse = torch.full((b, h_q, s_q), math.inf, dtype=torch.float64)
    for i in range(b):
        for j in range(s_q):
            rows = []
            for cache, indices, lengths in sources:
                num_blocks, page = cache.shape[0], cache.shape[1]
                topk = indices.shape[-1]
                count = topk if lengths is None else max(0, min(int(lengths[i]), topk))
                for k in range(count):
                    x = int(indices[i, j, k])
                    if 0 <= x < num_blocks * page:
                        rows.append(cache[x // page, x % page, 0].double())
            if not rows:
                continue
            kv = torch.stack(rows)
            for h in range(h_q):
                logits = kv @ q[i, j, h].double() * scale
                lse[i, h, j] = torch.logsumexp(logits, 0)
                o = torch.softmax(logits, 0) @ kv[:, :d_v]
                if sink is not None:
                    o = o / (1 + torch.exp(sink[h].double() - lse[i, h, j]))
                out[i, j, h] = o
    return out, lse


@pytest.mark.parametrize("sink", ["none", "mixed"])
@pytest.mark.parametrize("with_extra", [False, True])
def test_sparse_reference_matches_naive(sink: str, with_extra: bool):
    main = testing.SparseSourceSpec(
        topk=40,
        page_block_size=7,
        topk_length=[0, 40, 17, 100, -1],
        invalid_fraction=0.2,
        all_invalid_fraction=0.2,
        token_pad=16,
        indices_pad=3,
        block_gap=2,
    )
    extra = testing.SparseSourceSpec(topk=20, page_block_size=3) if with_extra else None
    inputs = testing.make_sparse_decode_inputs(
        main,
        b=5,
        s_q=2,
        h_q=3,
        layout="bf16",
        d_qk=40,
        extra=extra,
        sink=sink,
        q_pad=8,
        device="cpu",
        seed=3,
    )
    ref_out, ref_lse = testing.reference_for(inputs, 16, return_error_scales=False)
    sources = [(inputs.main.ref_cache, inputs.main.indices, inputs.main.topk_length)]
    if with_extra:
        sources.append((inputs.extra.ref_cache, inputs.extra.indices, inputs.extra.topk_length))
    out, lse = naive_sparse_decode(inputs.q, sources, 40**-0.5, 16, inputs.attn_sink)
    torch.testing.assert_close(ref_out.double(), out, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ref_lse.double(), lse, rtol=1e-6, atol=1e-6)
    if not with_extra:
        assert (ref_lse[0] == math.inf).all() and (ref_out[0] == 0).all()  # topk_length 0
        assert (ref_lse[4] == math.inf).all()  # topk_length -1


def test_sparse_inputs_hide_nan_only_in_uncounted_rows():
    main = testing.SparseSourceSpec(topk=30, page_block_size=5, topk_length=[30, 4, 0])
    inputs = testing.make_sparse_decode_inputs(
        main, b=3, s_q=2, h_q=2, layout="bf16", d_qk=24, device="cpu", seed=4
    )
    cache = inputs.main
    counted = testing._counted_rows(cache)
    assert torch.isfinite(cache.k_cache[counted]).all()
    assert torch.isnan(cache.k_cache[~counted]).all()
    assert torch.isnan(cache.storage[:, cache.page_block_size :]).all()  # the gaps
    assert int(counted.sum()) == testing.sparse_retrieved_tokens(cache)
    # Entries past topk_length may name owned rows, which must be NaN unless counted elsewhere.
    assert testing.sparse_counted_entries(cache) <= 30 * 2 + 4 * 2


def naive_sparse_prefill(q, kv, indices, scale, d_v, sink, topk_length):
    """Per query token and head: collect the counted rows one by one, softmax, sink factor."""
    s_q, h_q, _ = q.shape
    s_kv, topk = kv.shape[0], indices.shape[-1]
    out = torch.zeros(s_q, h_q, d_v, dtype=torch.float64)
    max_logits = torch.full((s_q, h_q), -math.inf, dtype=torch.float64)
    lse = torch.full((s_q, h_q), math.inf, dtype=torch.float64)
    for s in range(s_q):
        count = topk if topk_length is None else max(0, min(int(topk_length[s]), topk))
        rows = [int(indices[s, 0, j]) for j in range(count)]
        rows = [kv[x, 0].double() for x in rows if 0 <= x < s_kv]
        if not rows:
            continue
        k = torch.stack(rows)
        for h in range(h_q):
            logits = k @ q[s, h].double() * scale
            max_logits[s, h] = logits.max()
            lse[s, h] = torch.logsumexp(logits, 0)
            o = torch.softmax(logits, 0) @ k[:, :d_v]
            if sink is not None:
                o = o / (1 + torch.exp(sink[h].double() - lse[s, h]))
            out[s, h] = o
    return out, max_logits, lse


@pytest.mark.parametrize(
    "case",
    [
        dict(
            s_kv=40,
            topk=16,
            invalid_fraction=0.2,
            all_invalid_fraction=0.2,
            sink="mixed",
            topk_length="random",
            strided=True,
        ),
        dict(s_kv=10, topk=32, duplicates=True, sink="finite", topk_length=[0, 32, 40, -1, 5, 9]),
        dict(s_kv=50, topk=8, sink="flashmla", value_scale=0.1, value_offset=0.03, sm_scale=0.5),
        dict(s_kv=5, topk=4, all_invalid_fraction=1.0, sink="+inf"),
    ],
    ids=["invalid-mixed-strided", "duplicates-lengths", "flashmla-values", "all-invalid"],
)
def test_sparse_prefill_reference_matches_naive(case: dict):
    inputs = testing.make_sparse_prefill_inputs(
        6, h_q=3, d_qk=24, d_v=16, device="cpu", seed=5, **case
    )
    assert torch.isnan(inputs.kv_storage[0]).all() and torch.isnan(inputs.kv_storage[-1]).all()
    call = (
        inputs.q,
        inputs.kv,
        inputs.indices,
        inputs.sm_scale,
        16,
        inputs.attn_sink,
        inputs.topk_length,
    )
    # Small chunks: the chunked path is the one that runs on the large cases.
    ref_out, ref_max, ref_lse = testing.reference_sparse_prefill(*call, max_chunk_bytes=4096)
    out, max_logits, lse = naive_sparse_prefill(*call)
    torch.testing.assert_close(ref_out.double(), out, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ref_max.double(), max_logits, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(ref_lse.double(), lse, rtol=1e-6, atol=1e-6)
    if case.get("topk_length") is not None and not isinstance(case["topk_length"], str):
        assert (ref_lse[0] == math.inf).all() and (ref_max[0] == -math.inf).all()  # length 0
        assert (ref_lse[3] == math.inf).all() and (ref_out[3] == 0).all()  # length -1
    rows = [5, 0, 2]
    sub = testing.reference_sparse_prefill(*call, rows=rows)
    for part, whole in zip(sub, (ref_out, ref_max, ref_lse)):
        assert torch.equal(part, whole[rows])


def test_sparse_prefill_inputs_hide_nan_only_in_uncounted_rows():
    inputs = testing.make_sparse_prefill_inputs(
        5,
        64,
        16,
        h_q=2,
        d_qk=16,
        d_v=8,
        invalid_fraction=0.3,
        topk_length=[16, 3, 0, 20, 7],
        device="cpu",
        seed=6,
    )
    counted = testing.sparse_prefill_counted(inputs.indices, 64, inputs.topk_length)
    used = torch.zeros(64, dtype=torch.bool)
    used[inputs.indices[:, 0].long()[counted]] = True
    assert torch.isfinite(inputs.kv[used]).all()
    assert torch.isnan(inputs.kv[~used]).all()
    assert torch.isfinite(inputs.q).all()
    # Distinct tokens per query token (no duplicates unless asked for).
    for s in range(5):
        valid = inputs.indices[s, 0][(inputs.indices[s, 0] >= 0) & (inputs.indices[s, 0] < 64)]
        assert valid.unique().numel() == valid.numel()


def test_check_sparse_prefill_rules():
    inputs = testing.make_sparse_prefill_inputs(
        8,
        40,
        16,
        h_q=4,
        d_qk=24,
        d_v=16,
        all_invalid_fraction=0.3,
        sink="finite",
        device="cpu",
        seed=7,
    )
    ref_out, ref_max, ref_lse = testing.reference_sparse_prefill(*inputs.args(), **inputs.kwargs())
    out = ref_out.to(torch.bfloat16)
    assert bool((ref_lse == math.inf).any()) and bool((ref_lse != math.inf).any())
    counts = testing.check_sparse_prefill_against_reference(
        inputs, out, ref_max, ref_lse, max_chunk_bytes=2048
    )
    assert set(counts) == {
        "out_within_rounding_bound_only",
        "max_logits_within_rounding_bound_only",
        "lse_within_rounding_bound_only",
    }
    s, h = (ref_lse != math.inf).nonzero()[0].tolist()
    empty_s, empty_h = (ref_lse == math.inf).nonzero()[0].tolist()
    bad = out.clone()
    bad[s, h, 0] += 0.25
    with pytest.raises(AssertionError, match="out"):
        testing.check_sparse_prefill_against_reference(inputs, bad, ref_max, ref_lse)
    bad = out.clone()
    bad[empty_s, empty_h, 3] = 1e-30  # a query without a valid index must give exactly 0
    with pytest.raises(AssertionError, match="non-zero output"):
        testing.check_sparse_prefill_against_reference(inputs, bad, ref_max, ref_lse)
    bad_max = ref_max.clone()
    bad_max[empty_s, empty_h] = 0.0
    with pytest.raises(AssertionError, match="max_logits"):
        testing.check_sparse_prefill_against_reference(inputs, out, bad_max, ref_lse)
    bad_max = ref_max.clone()
    bad_max[s, h] += 1e-3
    with pytest.raises(AssertionError, match="max_logits"):
        testing.check_sparse_prefill_against_reference(inputs, out, bad_max, ref_lse)
    bad_lse = ref_lse.clone()
    bad_lse[s, h] += 1e-3
    with pytest.raises(AssertionError, match="lse"):
        testing.check_sparse_prefill_against_reference(inputs, out, ref_max, bad_lse)
    with pytest.raises(AssertionError, match="shape"):
        testing.check_sparse_prefill_against_reference(inputs, out[:-1], ref_max, ref_lse)
    # Only the sampled rows are checked.
    bad = out.clone()
    bad[s, h, 0] += 0.25
    others = [r for r in range(8) if r != s]
    testing.check_sparse_prefill_against_reference(inputs, bad, ref_max, ref_lse, rows=others)
