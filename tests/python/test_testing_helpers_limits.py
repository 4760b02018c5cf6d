"""The dense-decode oracle beyond FlashMLA's limits: flash_mla.testing's reference, inputs and
bad-value model for any page size, non-paged caches, empty batches and bad lengths or table
entries, against a naive per-token lookup. Runs on the CPU."""

import math

import pytest
import torch

testing = pytest.importorskip("flash_mla.testing")


def token_row(k_cache, block_table, i: int, t: int):
    """Token t of sequence i: through the block table, or k_cache[i, t] when it is None."""
    if block_table is None:
        return k_cache[i, t]
    page = k_cache.shape[1]
    return k_cache[int(block_table[i, t // page]), t % page]


def naive_decode(q, k_cache, block_table, cache_seqlens, d_v, scale, causal):
    b, s_q, h_q, _ = q.shape
    h_kv = k_cache.shape[2]
    out = torch.zeros(b, s_q, h_q, d_v, dtype=torch.float64)
    lse = torch.full((b, h_q, s_q), math.inf, dtype=torch.float64)
    for i in range(b):
        n = int(cache_seqlens[i])
        for h in range(h_q):
            for j in range(s_q):
                visible = n - s_q + j + 1 if causal else n
                if visible <= 0:
                    continue
                kv = torch.stack(
                    [
                        token_row(k_cache, block_table, i, t)[h // (h_q // h_kv)]
                        for t in range(visible)
                    ]
                ).double()
                logits = kv @ q[i, j, h].double() * scale
                lse[i, h, j] = torch.logsumexp(logits, 0)
                out[i, j, h] = torch.softmax(logits, 0) @ kv[:, :d_v]
    return out, lse


def cpu_inputs(seqlens, **kwargs):
    args = dict(s_q=2, h_q=4, h_kv=2, d_qk=24, dtype=torch.bfloat16, device="cpu", seed=7)
    args.update(kwargs)
    return testing.make_decode_inputs(seqlens, **args)


def reference(inputs, causal=False, **kwargs):
    return testing.reference_dense_decode(
        inputs.q,
        inputs.k_cache,
        inputs.block_table,
        inputs.cache_seqlens,
        16,
        causal=causal,
        **kwargs,
    )


def assert_only_used_rows_finite(inputs) -> None:
    """Every row a sequence uses is finite; every other row of k_cache (and of its storage)
    is NaN."""
    used = torch.zeros(inputs.k_cache.shape[:2], dtype=torch.bool)
    page = inputs.k_cache.shape[1]
    for i, n in enumerate(inputs.cache_seqlens.tolist()):
        for t in range(n):
            if inputs.block_table is None:
                used[i, t] = True
            else:
                used[int(inputs.block_table[i, t // page]), t % page] = True
    finite = torch.isfinite(inputs.k_cache).all(-1).all(-1)
    nan = torch.isnan(inputs.k_cache).all(-1).all(-1)
    assert bool((finite == used).all()), "finite rows must be exactly the used ones"
    assert bool((nan == ~used).all()), "rows past the lengths must be NaN"
    if inputs.k_storage is not None:
        # Only the view's used rows are finite: the gaps of the buffer stay NaN.
        finite_elements = int(torch.isfinite(inputs.k_cache).sum())
        assert int(torch.isfinite(inputs.k_storage).sum()) == finite_elements


@pytest.mark.parametrize("page", [1, 2, 5, 53])
@pytest.mark.parametrize("causal", [False, True])
def test_reference_any_page_size(page: int, causal: bool):
    inputs = cpu_inputs([0, 1, page, page + 1, 3 * page - 1, 120], page_block_size=page)
    assert inputs.paged and inputs.page_block_size == page
    assert_only_used_rows_finite(inputs)
    ref_out, ref_lse = reference(inputs, causal)
    out, lse = naive_decode(
        inputs.q, inputs.k_cache, inputs.block_table, inputs.cache_seqlens, 16, 24**-0.5, causal
    )
    torch.testing.assert_close(ref_out.double(), out, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ref_lse.double(), lse, rtol=1e-6, atol=1e-6)
    assert (
        testing.dense_decode_value_errors(inputs.k_cache, inputs.block_table, inputs.cache_seqlens)
        == []
    )


@pytest.mark.parametrize("strided", [False, True])
@pytest.mark.parametrize("extra_rows", [0, 5])
@pytest.mark.parametrize("causal", [False, True])
def test_reference_non_paged(strided: bool, extra_rows: int, causal: bool):
    seqlens = [0, 1, 37, 70, 3]
    inputs = cpu_inputs(seqlens, paged=False, strided=strided, extra_rows=extra_rows)
    assert not inputs.paged and inputs.block_table is None
    assert inputs.k_cache.shape == (5, 70 + extra_rows, 2, 24)
    assert inputs.capacity == [70 + extra_rows] * 5
    assert inputs.k_cache.is_contiguous() == (not strided)
    assert (inputs.k_storage is not None) == strided
    assert all(s % 8 == 0 for s in inputs.k_cache.stride()[:-1]) and inputs.k_cache.stride(-1) == 1
    assert_only_used_rows_finite(inputs)
    ref_out, ref_lse = reference(inputs, causal)
    out, lse = naive_decode(
        inputs.q, inputs.k_cache, None, inputs.cache_seqlens, 16, 24**-0.5, causal
    )
    torch.testing.assert_close(ref_out.double(), out, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ref_lse.double(), lse, rtol=1e-6, atol=1e-6)
    # The same cache seen as one page per sequence gives the same answer.
    table = torch.arange(5, dtype=torch.int32)[:, None]
    paged_out, paged_lse = testing.reference_dense_decode(
        inputs.q, inputs.k_cache, table, inputs.cache_seqlens, 16, causal=causal
    )
    assert torch.equal(paged_out, ref_out) and torch.equal(paged_lse, ref_lse)


def test_strided_paged_inputs():
    inputs = cpu_inputs([5, 100, 0], page_block_size=16, strided=True)
    assert not inputs.k_cache.is_contiguous() and inputs.k_cache.shape[1] == 16
    assert_only_used_rows_finite(inputs)
    out, lse = reference(inputs)
    naive_out, naive_lse = naive_decode(
        inputs.q, inputs.k_cache, inputs.block_table, inputs.cache_seqlens, 16, 24**-0.5, False
    )
    torch.testing.assert_close(out.double(), naive_out, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(lse.double(), naive_lse, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("paged", [True, False])
def test_refill_keeps_storage(paged: bool):
    inputs = cpu_inputs([10, 40], capacity=[50, 64], paged=paged, page_block_size=7, strided=True)
    k_ptr, q_ptr = inputs.k_cache.data_ptr(), inputs.q.data_ptr()
    before = inputs.q.clone()
    testing.refill_(inputs, [50, 3], seed=3)
    assert inputs.k_cache.data_ptr() == k_ptr and inputs.q.data_ptr() == q_ptr
    assert not torch.equal(before, inputs.q)
    assert inputs.cache_seqlens.tolist() == [50, 3]
    assert_only_used_rows_finite(inputs)
    with pytest.raises(ValueError, match="capacity"):
        testing.refill_(inputs, [inputs.capacity[0] + 1, 0])


@pytest.mark.parametrize("paged", [True, False])
def test_empty_batch(paged: bool):
    inputs = cpu_inputs([], paged=paged)
    assert inputs.q.shape == (0, 2, 4, 24) and inputs.cache_seqlens.shape == (0,)
    if paged:
        assert inputs.block_table.shape[0] == 0
    else:
        assert inputs.k_cache.shape[0] == 0 and inputs.k_cache.shape[1] >= 1
    out, lse = reference(inputs)
    assert out.shape == (0, 2, 4, 16) and lse.shape == (0, 4, 2)
    testing.check_decode_against_reference(inputs, out.bfloat16(), lse.clone(), 16)


def errors_of(inputs):
    return testing.dense_decode_value_errors(
        inputs.k_cache, inputs.block_table, inputs.cache_seqlens
    )


def test_value_errors_paged():
    page = 8
    inputs = cpu_inputs([20, 16, 5, 0, 9, 30], page_block_size=page, extra_table_columns=2)
    num_blocks = inputs.k_cache.shape[0]
    width = inputs.block_table.shape[1]
    capacity = width * page
    assert testing.dense_decode_capacity(inputs.k_cache, inputs.block_table) == capacity
    # Sequence 1 uses exactly 2 pages: the garbage entry in column 2 is never looked at.
    assert int(inputs.block_table[1, 2]) in testing.GARBAGE_BLOCK_IDS
    assert errors_of(inputs) == []

    inputs.cache_seqlens[0] = -5
    inputs.cache_seqlens[2] = capacity + 1
    inputs.block_table[4, 1] = num_blocks  # inside sequence 4 (9 tokens: 2 pages)
    inputs.cache_seqlens[3] = 1  # sequence 3 now uses column 0, a garbage entry
    inputs.block_table[5, 3] = -1  # sequence 5 (30 tokens): the last of its 4 pages
    garbage = int(inputs.block_table[3, 0])
    E = testing.DenseDecodeValueError
    assert errors_of(inputs) == [
        E("negative_seqlen", "cache_seqlens", 0, -1, -5, 0),
        E("seqlen_beyond_capacity", "cache_seqlens", 2, -1, capacity + 1, capacity),
        E("block_table_entry_out_of_range", "block_table", 3, 0, garbage, num_blocks),
        E("block_table_entry_out_of_range", "block_table", 4, 1, num_blocks, num_blocks),
        E("block_table_entry_out_of_range", "block_table", 5, 3, -1, num_blocks),
    ]
    assert errors_of(inputs)[0].operation == "dense_decode"
    assert testing.dense_decode_value_errors(
        inputs.k_cache, inputs.block_table, inputs.cache_seqlens, [1, 4]
    ) == [E("block_table_entry_out_of_range", "block_table", 4, 1, num_blocks, num_blocks)]


def test_value_errors_non_paged():
    inputs = cpu_inputs([3, 10, 0], paged=False, extra_rows=2)
    assert testing.dense_decode_capacity(inputs.k_cache, None) == 12
    inputs.cache_seqlens.copy_(torch.tensor([12, -1, 13], dtype=torch.int32))
    E = testing.DenseDecodeValueError
    assert errors_of(inputs) == [
        E("negative_seqlen", "cache_seqlens", 1, -1, -1, 0),
        E("seqlen_beyond_capacity", "cache_seqlens", 2, -1, 13, 12),
    ]


@pytest.mark.parametrize("paged", [True, False])
def test_reference_marks_bad_sequences_nan(paged: bool):
    inputs = cpu_inputs([20, 7, 33, 1], paged=paged, page_block_size=6)
    clean_out, clean_lse = reference(inputs, causal=True)
    inputs.cache_seqlens[1] = -3
    if paged:
        inputs.block_table[2, 4] = inputs.k_cache.shape[0] + 5
    else:
        inputs.cache_seqlens[2] = inputs.k_cache.shape[1] + 1
    out, lse, out_abs, logit_scale = reference(inputs, causal=True, return_error_scales=True)
    assert out[[1, 2]].isnan().all() and lse[[1, 2]].isnan().all()
    assert torch.equal(out[[0, 3]], clean_out[[0, 3]]) and torch.equal(
        lse[[0, 3]], clean_lse[[0, 3]]
    )
    assert (out_abs[[1, 2]] == 0).all() and (logit_scale[[1, 2]] == 0).all()
    # A kernel result (bfloat16 out) with NaN rows where the reference has them passes, as a
    # whole batch and restricted to the good sequences; a finite value in a bad row does not.
    testing.check_decode_against_reference(inputs, out.bfloat16(), lse.clone(), 16, causal=True)
    testing.check_decode_against_reference(
        inputs, out[[0, 3]].bfloat16(), lse[[0, 3]], 16, causal=True, batch_indices=[0, 3]
    )
    testing.check_nan_sequences(out, lse, [1, 2])
    spoiled = out.clone()
    spoiled[1, 0, 0, 0] = 0.0
    with pytest.raises(AssertionError, match="NaN positions differ"):
        testing.check_decode_against_reference(
            inputs, spoiled.bfloat16(), lse.clone(), 16, causal=True
        )
    with pytest.raises(AssertionError, match=r"out\[1\]: 1 of"):
        testing.check_nan_sequences(spoiled, lse, [1, 2])
    nan_out = out.clone()
    nan_out[0] = math.nan
    with pytest.raises(AssertionError, match=r"lse\[0\]: 8 of 8 elements"):
        testing.check_nan_sequences(nan_out, lse, [0])


def test_mark_unused_rows_tolerates_bad_values():
    """refill_ on a batch a test gave bad values: bad lengths and entries are skipped."""
    inputs = cpu_inputs([9, 4], page_block_size=4)
    inputs.cache_seqlens.copy_(torch.tensor([-2, 1000], dtype=torch.int32))
    inputs.block_table[0, 0] = -7
    testing.refill_(inputs, seed=5)  # no IndexError
    non_paged = cpu_inputs([9, 4], paged=False)
    non_paged.cache_seqlens.copy_(torch.tensor([-2, 1000], dtype=torch.int32))
    testing.refill_(non_paged, seed=5)
    assert torch.isnan(non_paged.k_cache[0]).all() and torch.isfinite(non_paged.k_cache[1]).all()
