"""Dense MLA decoding without FlashMLA's limits, against the PyTorch reference of
flash_mla.testing: any page_block_size >= 1, non-paged caches (block_table None, k_cache
[b, s_k_max, h_kv, d_qk]), empty batches, and bad values that live on the GPU (negative lengths,
lengths beyond the capacity, used block-table entries outside [0, num_blocks)) that are never
silent: the sequence's out and lse become NaN, the other sequences are computed normally, the
first error is kept in the device error record (flash_mla.read_error_record), and with
FLASH_MLA_CHECKED=1 the call raises ValueError naming the argument, batch index and value.

Inputs come from make_decode_inputs: pages randomly permuted, NaN in every cache row past a
sequence's length, garbage in unused block-table entries.
"""

import dataclasses
import random

import pytest
import torch

if not torch.cuda.is_available():
    pytest.skip("flash_mla tests need a CUDA GPU", allow_module_level=True)

import flash_mla  # noqa: E402
from flash_mla.testing import (  # noqa: E402
    GARBAGE_BLOCK_IDS,
    DecodeInputs,
    DenseDecodeValueError,
    check_decode_against_reference,
    check_nan_sequences,
    dense_decode_capacity,
    dense_decode_value_errors,
    make_decode_inputs,
    refill_,
)
from compile_graph_helpers import capture  # noqa: E402
from error_helpers import expect_error  # noqa: E402
from grid_helpers import balanced, case_seed  # noqa: E402

D_V = 512
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
CHECKED = "FLASH_MLA_CHECKED"
INT32_MAX, INT32_MIN = 2**31 - 1, -(2**31)


@pytest.fixture(autouse=True)
def clean_error_record(monkeypatch):
    """Every test starts unchecked (unless it sets FLASH_MLA_CHECKED itself) with an empty
    device error record, and leaves the record empty and no asynchronous CUDA error behind."""
    monkeypatch.delenv(CHECKED, raising=False)
    torch.cuda.synchronize()
    flash_mla.clear_error_record()
    yield
    torch.cuda.synchronize()  # raises if a call left an asynchronous CUDA error
    flash_mla.clear_error_record()


# ---- helpers ------------------------------------------------------------------------------------


def plan(form: str, inputs: DecodeInputs):
    """(metadata, num_splits) of the tensor form of get_mla_metadata, or of the newer one."""
    _, s_q, h_q, _ = inputs.q.shape
    h_kv = inputs.k_cache.shape[2]
    if form == "tensors":
        return flash_mla.get_mla_metadata(inputs.cache_seqlens, s_q * h_q // h_kv, h_kv)
    assert form == "sched_meta", form
    return flash_mla.get_mla_metadata()


def decode(inputs: DecodeInputs, metadata=None, num_splits=None, causal: bool = False):
    return flash_mla.flash_mla_with_kvcache(
        inputs.q,
        inputs.k_cache,
        inputs.block_table,
        inputs.cache_seqlens,
        D_V,
        metadata,
        num_splits,
        causal=causal,
    )


def check_shapes(inputs: DecodeInputs, out: torch.Tensor, lse: torch.Tensor) -> None:
    b, s_q, h_q, _ = inputs.q.shape
    assert out.shape == (b, s_q, h_q, D_V) and out.dtype == inputs.q.dtype
    assert lse.shape == (b, h_q, s_q) and lse.dtype == torch.float32


def run_and_check(inputs: DecodeInputs, metadata, num_splits, causal: bool) -> None:
    """One call, checked against the reference; good values leave no error record."""
    out, lse = decode(inputs, metadata, num_splits, causal)
    check_shapes(inputs, out, lse)
    check_decode_against_reference(inputs, out, lse, D_V, causal=causal)
    record = flash_mla.read_error_record()
    assert record is None, f"good values recorded an error: {record}"


def names_bad_value(message: str, error: DenseDecodeValueError) -> bool:
    """Whether `message` names the argument, batch index (and column) and the bad value as
    "cache_seqlens[2] = -5" or "block_table[3][17] = 9000"."""
    column = f"[{error.position}]" if error.argument == "block_table" else ""
    return f"{error.argument}[{error.batch_index}]{column} = {error.value}" in message


def check_record(record, expected: DenseDecodeValueError) -> None:
    """The device error record must describe `expected`, field by field."""
    assert record is not None, f"no error was recorded; expected {expected}"
    assert isinstance(record, flash_mla.DeviceError)
    fields = ("kind", "operation", "argument", "batch_index", "position", "value", "limit")
    actual = {name: getattr(record, name) for name in fields}
    wanted = {name: getattr(expected, name) for name in fields}
    assert actual == wanted, f"recorded {actual}, expected {wanted} ({record.message})"
    assert isinstance(record.message, str) and "\n" not in record.message.strip()
    assert record.message.startswith("dense_decode"), record.message
    assert names_bad_value(record.message, expected), record.message


def only_error(inputs: DecodeInputs, kind: str) -> DenseDecodeValueError:
    """The one bad value of `inputs` (as flash_mla.testing models it), which must be `kind`."""
    errors = dense_decode_value_errors(inputs.k_cache, inputs.block_table, inputs.cache_seqlens)
    assert len(errors) == 1 and errors[0].kind == kind, errors
    return errors[0]


def check_bad_call(inputs: DecodeInputs, out, lse, expected, causal: bool) -> None:
    """The affected sequence is NaN throughout, the others match the reference, and the record
    describes the bad value."""
    check_shapes(inputs, out, lse)
    check_nan_sequences(out, lse, [expected.batch_index])
    good = [i for i in range(inputs.q.shape[0]) if i != expected.batch_index]
    check_decode_against_reference(
        inputs, out[good], lse[good], D_V, causal=causal, batch_indices=good
    )
    check_record(flash_mla.read_error_record(), expected)


# ---- any page size -------------------------------------------------------------------------------

PAGE_SIZES = [1, 2, 16, 32, 53, 64, 128, 256]
PAGE_HEADS = [(128, 1), (16, 1), (8, 2)]
CASES_PER_PAGE_SIZE = 12


def page_size_cases() -> list:
    """CASES_PER_PAGE_SIZE cases per page size; s_q, causal, heads, d_qk and dtype each cycle
    through their values (shuffled per page size), so every value meets every page size."""
    cases = []
    for page in PAGE_SIZES:
        rng = random.Random(case_seed("page grid", page))
        n = CASES_PER_PAGE_SIZE
        columns = zip(
            balanced([1, 2, 4], n, rng),
            balanced([False, True], n, rng),
            balanced(PAGE_HEADS, n, rng),
            balanced([576, 512], n, rng),
            balanced(list(DTYPES), n, rng),
        )
        for s_q, causal, (h_q, h_kv), d_qk, dtype_name in columns:
            mode = "causal" if causal else "full"
            case_id = f"page{page}-sq{s_q}-{mode}-h{h_q}x{h_kv}-d{d_qk}-{dtype_name}"
            cases.append(pytest.param(page, s_q, causal, h_q, h_kv, d_qk, dtype_name, id=case_id))
    return cases


def draw_page_seqlens(rng: random.Random, page: int, s_q: int) -> list[int]:
    """1 to 8 sequences: lengths around the page and the 64-token tile boundaries, empty and
    single-token ones, one shorter than s_q, and random ones up to 3000 (600 for page 1)."""
    longest = 600 if page == 1 else 3000
    pool = [0, 1, page - 1, page, page + 1, 2 * page + 1, 63, 64, 65, max(s_q - 1, 0)]
    pool += [rng.randint(1, longest), rng.randint(longest // 2, longest)]
    pool = [n for n in pool if 0 <= n <= longest]
    return [rng.choice(pool) for _ in range(rng.randint(1, 8))]


@pytest.mark.parametrize("page,s_q,causal,h_q,h_kv,d_qk,dtype_name", page_size_cases())
def test_any_page_size(page, s_q, causal, h_q, h_kv, d_qk, dtype_name):
    seed = case_seed("page", page, s_q, causal, h_q, h_kv, d_qk, dtype_name)
    rng = random.Random(seed)
    seqlens = draw_page_seqlens(rng, page, s_q)
    # Some sequences own more pages than they use (valid entries, NaN rows past the length).
    capacity = [n + rng.choice([0, 0, page, 3 * page]) for n in seqlens]
    inputs = make_decode_inputs(
        seqlens,
        s_q=s_q,
        h_q=h_q,
        h_kv=h_kv,
        d_qk=d_qk,
        dtype=DTYPES[dtype_name],
        page_block_size=page,
        capacity=capacity,
        extra_table_columns=rng.randint(0, 3),
        seed=seed,
    )
    assert inputs.k_cache.shape[1] == page and inputs.paged
    form = "tensors" if seed % 2 == 0 else "sched_meta"
    metadata, num_splits = plan(form, inputs)
    run_and_check(inputs, metadata, num_splits, causal)
    # Second layer: same lengths and plan, new values.
    refill_(inputs, seed=seed + 1)
    run_and_check(inputs, metadata, num_splits, causal)


@pytest.mark.parametrize("page", [1, 53])
def test_odd_page_size_strided_cache(page: int):
    """A paged cache with an odd page size as a view into a wider buffer (NaN gaps)."""
    inputs = make_decode_inputs(
        [0, 1, 300, 53, 54, 106],
        s_q=2,
        h_q=16,
        h_kv=1,
        d_qk=576,
        dtype=torch.bfloat16,
        page_block_size=page,
        strided=True,
        seed=case_seed("strided page", page),
    )
    assert not inputs.k_cache.is_contiguous()
    run_and_check(inputs, *plan("tensors", inputs), causal=True)


# ---- non-paged caches ---------------------------------------------------------------------------

# name: (seqlens, extra rows past the longest length, strided view into a wider buffer)
NON_PAGED_SHAPES = {
    "short": ([0, 5, 37, 37, 1], 0, False),  # s_k_max 37 < 64; lengths 0 and == s_k_max
    "odd": ([1000, 999, 0, 1, 500, 64, 65], 0, False),  # s_k_max 1000, not a multiple of 64
    "tile_multiple": ([128, 127, 64, 0], 0, False),  # s_k_max 128
    "padded": ([130, 0, 7, 129], 17, False),  # s_k_max 147, rows past every length
    "large": ([5000, 4097, 1, 0], 0, False),  # s_k_max 5000
    "strided": ([300, 0, 64, 299, 1], 5, True),  # a view with gaps in every dimension
}
# (h_q, h_kv, s_q, d_qk, dtype)
NON_PAGED_CONFIGS = {
    "h128x1-sq1-d576-bf16": (128, 1, 1, 576, "bf16"),
    "h16x2-sq2-d512-fp16": (16, 2, 2, 512, "fp16"),
    "h8x2-sq1-d576-fp16": (8, 2, 1, 576, "fp16"),
}


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("config", list(NON_PAGED_CONFIGS))
@pytest.mark.parametrize("shape", list(NON_PAGED_SHAPES))
def test_non_paged(shape: str, config: str, causal: bool):
    seqlens, extra_rows, strided = NON_PAGED_SHAPES[shape]
    h_q, h_kv, s_q, d_qk, dtype_name = NON_PAGED_CONFIGS[config]
    seed = case_seed("non-paged", shape, config, causal)
    inputs = make_decode_inputs(
        seqlens,
        s_q=s_q,
        h_q=h_q,
        h_kv=h_kv,
        d_qk=d_qk,
        dtype=DTYPES[dtype_name],
        paged=False,
        extra_rows=extra_rows,
        strided=strided,
        seed=seed,
    )
    assert inputs.block_table is None
    assert inputs.k_cache.shape == (len(seqlens), max(seqlens) + extra_rows, h_kv, d_qk)
    assert inputs.k_cache.is_contiguous() == (not strided)
    for form in ("tensors", "sched_meta"):
        metadata, num_splits = plan(form, inputs)
        run_and_check(inputs, metadata, num_splits, causal)
        refill_(inputs, seed=seed + 1)  # a second layer on the same plan
        run_and_check(inputs, metadata, num_splits, causal)
    run_and_check(inputs, None, None, causal)  # no plan: planned on the fly


def test_non_paged_new_lengths_same_storage():
    """New lengths in the same non-paged cache (as a decoding step would write them)."""
    inputs = make_decode_inputs(
        [10, 0, 700], s_q=1, h_q=64, h_kv=1, d_qk=576, dtype=torch.bfloat16, paged=False, seed=9
    )
    for step, seqlens in enumerate(([11, 1, 700], [700, 699, 0], [0, 0, 0])):
        refill_(inputs, seqlens, seed=step)
        run_and_check(inputs, *plan("tensors", inputs), causal=False)


# ---- empty batches ------------------------------------------------------------------------------


@pytest.mark.parametrize("s_q", [1, 2])
@pytest.mark.parametrize("form", ["tensors", "sched_meta"])
@pytest.mark.parametrize("paged", [True, False], ids=["paged", "non_paged"])
def test_empty_batch(paged: bool, form: str, s_q: int, monkeypatch):
    inputs = make_decode_inputs(
        [], s_q=s_q, h_q=16, h_kv=1, d_qk=576, dtype=torch.bfloat16, paged=paged, seed=s_q
    )
    assert inputs.q.shape == (0, s_q, 16, 576) and inputs.cache_seqlens.shape == (0,)
    if paged:
        assert inputs.block_table.shape[0] == 0 and inputs.block_table.shape[1] >= 1
    else:
        assert inputs.block_table is None and inputs.k_cache.shape[0] == 0
    for causal in (False, True):
        # A FlashMLASchedMeta holds the causal flag of its first call: one plan per flag.
        metadata, num_splits = plan(form, inputs)
        if form == "tensors":
            assert metadata.dtype == torch.int32 and metadata.dim() == 2
            assert num_splits.shape == (1,) and num_splits.tolist() == [0]
        out, lse = decode(inputs, metadata, num_splits, causal)
        check_shapes(inputs, out, lse)
    out, lse = decode(inputs)  # no plan
    check_shapes(inputs, out, lse)
    monkeypatch.setenv(CHECKED, "1")
    out, lse = decode(inputs, *plan("tensors", inputs))
    check_shapes(inputs, out, lse)
    torch.cuda.synchronize()
    assert flash_mla.read_error_record() is None


# ---- bad values ---------------------------------------------------------------------------------

BAD_SEQUENCE = 2  # of BAD_CASE_SEQLENS: 1000 tokens, several pages at every page size
BAD_CASE_SEQLENS = [700, 64, 1000, 5, 333]
BAD_CASE_HEADS = {64: (128, 1), 53: (16, 1), 16: (8, 2), None: (16, 2)}  # page (None: non-paged)

# What a case breaks -> the kind of error it is.
BAD_KINDS = {
    "negative": "negative_seqlen",
    "beyond_capacity": "seqlen_beyond_capacity",
    "huge_length": "seqlen_beyond_capacity",
    "entry_minus_one_first_page": "block_table_entry_out_of_range",
    "entry_num_blocks_middle_page": "block_table_entry_out_of_range",
    "entry_huge_last_page": "block_table_entry_out_of_range",
    "entry_int_min_middle_page": "block_table_entry_out_of_range",
    # The length grows past the sequence's own pages onto a garbage entry of the table (still
    # within the table's capacity): an out-of-range entry inside the length.
    "length_into_garbage": "block_table_entry_out_of_range",
}
LENGTH_ERRORS = ("negative", "beyond_capacity", "huge_length")


def break_inputs(inputs: DecodeInputs, what: str, i: int = BAD_SEQUENCE) -> None:
    """Writes the bad value `what` into sequence i of `inputs` (in place)."""
    n = int(inputs.cache_seqlens[i])
    page = inputs.k_cache.shape[1]
    pages = (n + page - 1) // page
    num_blocks = inputs.k_cache.shape[0]
    capacity = dense_decode_capacity(inputs.k_cache, inputs.block_table)
    if what == "negative":
        inputs.cache_seqlens[i] = -5
    elif what == "beyond_capacity":
        inputs.cache_seqlens[i] = capacity + 1
    elif what == "huge_length":
        inputs.cache_seqlens[i] = INT32_MAX
    elif what == "entry_minus_one_first_page":
        inputs.block_table[i, 0] = -1
    elif what == "entry_num_blocks_middle_page":
        inputs.block_table[i, pages // 2] = num_blocks
    elif what == "entry_huge_last_page":
        inputs.block_table[i, pages - 1] = INT32_MAX
    elif what == "entry_int_min_middle_page":
        inputs.block_table[i, pages // 2 + 1] = INT32_MIN
    elif what == "length_into_garbage":
        assert int(inputs.block_table[i, pages]) in GARBAGE_BLOCK_IDS
        inputs.cache_seqlens[i] = pages * page + 1
    else:
        raise AssertionError(f"unknown bad value {what}")


def bad_case_inputs(page, seed: int, **kwargs) -> DecodeInputs:
    """BAD_CASE_SEQLENS, paged with `page` tokens a page or non-paged (page None)."""
    h_q, h_kv = BAD_CASE_HEADS[page]
    args = dict(s_q=2, h_q=h_q, h_kv=h_kv, d_qk=576, dtype=torch.bfloat16, seed=seed)
    if page is None:
        args.update(paged=False, extra_rows=3)
    else:
        args.update(page_block_size=page)
    args.update(kwargs)
    return make_decode_inputs(BAD_CASE_SEQLENS, **args)


def bad_cases() -> list:
    cases = []
    for what in BAD_KINDS:
        for page in (64, 53, 16):
            cases.append(pytest.param(what, page, id=f"{what}-page{page}"))
        if what in LENGTH_ERRORS:
            cases.append(pytest.param(what, None, id=f"{what}-non_paged"))
    return cases


@pytest.mark.parametrize("what,page", bad_cases())
def test_bad_value(what: str, page, monkeypatch):
    causal = page != 53
    inputs = bad_case_inputs(page, case_seed("bad", what, page))
    break_inputs(inputs, what)
    expected = only_error(inputs, BAD_KINDS[what])
    assert expected.batch_index == BAD_SEQUENCE

    # Unchecked, both plan forms (planned with the bad values in place).
    for form in ("tensors", "sched_meta"):
        flash_mla.clear_error_record()
        out, lse = decode(inputs, *plan(form, inputs), causal=causal)
        check_bad_call(inputs, out, lse, expected, causal)
    # Reading with clear=True returns the record once.
    check_record(flash_mla.read_error_record(clear=True), expected)
    assert flash_mla.read_error_record() is None

    # Checked: the call raises ValueError naming the argument, batch index and value, and the
    # raise clears the record.
    monkeypatch.setenv(CHECKED, "1")
    with pytest.raises(ValueError) as info:
        decode(inputs, *plan("tensors", inputs), causal=causal)
    assert names_bad_value(str(info.value), expected), str(info.value)
    assert flash_mla.read_error_record() is None


@pytest.mark.parametrize("page", [64, 53, 1, None], ids=["page64", "page53", "page1", "non_paged"])
def test_garbage_past_the_length_is_no_error(page, monkeypatch):
    """Entries past ceil(length / page_block_size) are never looked at, whatever they hold,
    also right after a length that fills its last page, and for an empty sequence."""
    if page is None:
        inputs = make_decode_inputs(
            [0, 37, 40], s_q=1, h_q=16, h_kv=1, d_qk=576, dtype=torch.bfloat16, paged=False, seed=4
        )
    else:
        seqlens = [0, 2 * page, 3 * page + 1, page]
        inputs = make_decode_inputs(
            seqlens,
            s_q=1,
            h_q=16,
            h_kv=1,
            d_qk=576,
            dtype=torch.bfloat16,
            page_block_size=page,
            extra_table_columns=4,
            seed=case_seed("garbage", page),
        )
        num_blocks = inputs.k_cache.shape[0]
        # Every kind of garbage right after the used entries of each sequence.
        for i, n in enumerate(seqlens):
            used = (n + page - 1) // page
            for j, value in enumerate((-1, num_blocks, INT32_MAX, INT32_MIN)):
                inputs.block_table[i, used + j] = value
    assert not dense_decode_value_errors(inputs.k_cache, inputs.block_table, inputs.cache_seqlens)
    run_and_check(inputs, *plan("tensors", inputs), causal=False)
    run_and_check(inputs, *plan("sched_meta", inputs), causal=True)
    monkeypatch.setenv(CHECKED, "1")  # good values in checked mode: normal results, no raise
    run_and_check(inputs, *plan("tensors", inputs), causal=False)
    run_and_check(inputs, None, None, causal=True)


@pytest.mark.parametrize(
    "b,page,where",
    [(1, 64, "late"), (2, 64, "early"), (2, 64, "late"), (2, 53, "middle"), (2, 53, "late")],
)
def test_bad_entry_through_split_kv_combine(b: int, page: int, where: str):
    """A long sequence that the planner splits: a bad entry in one split's pages makes the whole
    combined row NaN, and the other sequence is unaffected."""
    length = 20000
    inputs = make_decode_inputs(
        [length] * b,
        s_q=1,
        h_q=128,
        h_kv=1,
        d_qk=576,
        dtype=torch.bfloat16,
        page_block_size=page,
        seed=case_seed("split", b, page, where),
    )
    metadata, num_splits = flash_mla.get_mla_metadata(inputs.cache_seqlens, 128, 1)
    splits = num_splits.tolist()
    assert splits[1] - splits[0] >= 2, f"sequence 0 should be split: num_splits {splits}"
    pages = (length + page - 1) // page
    col = {"early": 1, "middle": pages // 2, "late": pages - 2}[where]
    inputs.block_table[0, col] = inputs.k_cache.shape[0] + 7
    expected = only_error(inputs, "block_table_entry_out_of_range")
    assert (expected.batch_index, expected.position) == (0, col)
    out, lse = decode(inputs, metadata, num_splits)
    check_bad_call(inputs, out, lse, expected, causal=False)


def test_two_bad_sequences():
    """Both affected sequences are NaN; the record holds one of the two errors."""
    inputs = bad_case_inputs(53, seed=77)
    break_inputs(inputs, "negative", i=0)
    break_inputs(inputs, "entry_num_blocks_middle_page", i=2)
    errors = dense_decode_value_errors(inputs.k_cache, inputs.block_table, inputs.cache_seqlens)
    assert [e.batch_index for e in errors] == [0, 2]
    out, lse = decode(inputs, *plan("tensors", inputs), causal=True)
    check_nan_sequences(out, lse, [0, 2])
    good = [1, 3, 4]
    check_decode_against_reference(
        inputs, out[good], lse[good], D_V, causal=True, batch_indices=good
    )
    record = flash_mla.read_error_record()
    assert record is not None and record.batch_index in (0, 2), record
    check_record(record, errors[0] if record.batch_index == 0 else errors[1])


def test_record_keeps_the_first_error():
    first = bad_case_inputs(64, seed=81)
    break_inputs(first, "negative")
    second = bad_case_inputs(16, seed=82)
    break_inputs(second, "entry_minus_one_first_page")
    expected = only_error(first, "negative_seqlen")
    decode(first, *plan("tensors", first))
    torch.cuda.synchronize()
    out, lse = decode(second, *plan("tensors", second))
    check_nan_sequences(out, lse, [BAD_SEQUENCE])  # the later error still marks its sequence
    check_record(flash_mla.read_error_record(), expected)  # ... but does not overwrite the record
    # The record is per device: reading it by device gives the same.
    check_record(flash_mla.read_error_record(first.q.device), expected)
    check_record(flash_mla.read_error_record(torch.cuda.current_device()), expected)
    flash_mla.clear_error_record()
    assert flash_mla.read_error_record() is None
    # A good call after clearing records nothing; a bad one records its own error.
    run_and_check(bad_case_inputs(53, seed=83), None, None, causal=False)
    decode(second, *plan("tensors", second))
    check_record(
        flash_mla.read_error_record(), only_error(second, "block_table_entry_out_of_range")
    )


def test_device_error_is_a_frozen_dataclass():
    inputs = bad_case_inputs(None, seed=85)
    break_inputs(inputs, "beyond_capacity")
    decode(inputs)
    record = flash_mla.read_error_record()
    check_record(record, only_error(inputs, "seqlen_beyond_capacity"))
    assert record.limit == inputs.k_cache.shape[1]  # s_k_max
    assert dataclasses.is_dataclass(record)
    with pytest.raises(dataclasses.FrozenInstanceError):
        record.kind = "negative_seqlen"


def test_checked_mode_good_inputs(monkeypatch):
    """FLASH_MLA_CHECKED=1 with good values gives the normal results, paged (odd page size)
    and non-paged; FLASH_MLA_CHECKED=0 is unchecked."""
    monkeypatch.setenv(CHECKED, "1")
    for page in (53, 64, None):
        inputs = bad_case_inputs(page, seed=case_seed("checked good", page))
        for form in ("tensors", "sched_meta"):
            run_and_check(inputs, *plan(form, inputs), causal=True)
    monkeypatch.setenv(CHECKED, "0")
    inputs = bad_case_inputs(64, seed=86)
    break_inputs(inputs, "negative")
    out, lse = decode(inputs, *plan("tensors", inputs))  # no raise
    check_bad_call(inputs, out, lse, only_error(inputs, "negative_seqlen"), causal=False)


# ---- CUDA graphs --------------------------------------------------------------------------------

GRAPH_SEQLENS = [1, 130, 1000, 0, 64]  # BAD_SEQUENCE (2) has 1000 tokens
GRAPH_S_Q, GRAPH_H_Q, GRAPH_H_KV = 2, 64, 1


def graph_inputs(page, seed: int) -> DecodeInputs:
    args = dict(s_q=GRAPH_S_Q, h_q=GRAPH_H_Q, h_kv=GRAPH_H_KV, d_qk=576, dtype=torch.bfloat16)
    if page is None:
        return make_decode_inputs(GRAPH_SEQLENS, paged=False, extra_rows=10, seed=seed, **args)
    return make_decode_inputs(GRAPH_SEQLENS, page_block_size=page, seed=seed, **args)


def capture_decode(inputs: DecodeInputs, form: str):
    """Captures a causal dense call: planning inside the graph ("plan_inside", so that new
    lengths are planned at replay), a tensor plan made before ("tensors_outside"), or a
    FlashMLASchedMeta planned by a first eager call ("sched_meta")."""
    rows = GRAPH_S_Q * GRAPH_H_Q // GRAPH_H_KV
    if form == "plan_inside":

        def step():
            metadata, num_splits = flash_mla.get_mla_metadata(
                inputs.cache_seqlens, rows, GRAPH_H_KV
            )
            return decode(inputs, metadata, num_splits, causal=True)

    elif form == "tensors_outside":
        metadata, num_splits = flash_mla.get_mla_metadata(inputs.cache_seqlens, rows, GRAPH_H_KV)

        def step():
            return decode(inputs, metadata, num_splits, causal=True)

    else:
        assert form == "sched_meta", form
        sched, _ = flash_mla.get_mla_metadata()
        decode(inputs, sched, None, causal=True)  # plans and stores the plan

        def step():
            return decode(inputs, sched, None, causal=True)

    graph, outputs = capture(step)
    # The graph reads the tensors `step` refers to (a plan made outside it): they must live as
    # long as the graph, or their memory is reused and the replay reads a garbage plan.
    graph.keep_alive = step
    return graph, outputs


def replay_and_check_good(graph, inputs: DecodeInputs, out, lse) -> None:
    graph.replay()
    torch.cuda.synchronize()
    check_decode_against_reference(inputs, out, lse, D_V, causal=True)
    record = flash_mla.read_error_record()
    assert record is None, f"good values recorded an error: {record}"


GRAPH_CASES = [
    ("plan_inside", 53, "entry_num_blocks_middle_page"),
    ("plan_inside", 64, "negative"),
    ("plan_inside", 16, "beyond_capacity"),
    ("plan_inside", 1, "length_into_garbage"),
    ("plan_inside", None, "beyond_capacity"),
    ("plan_inside", None, "negative"),
    ("tensors_outside", 64, "entry_huge_last_page"),
    ("sched_meta", 53, "entry_minus_one_first_page"),
]


@pytest.mark.parametrize(
    "form,page,what",
    [
        pytest.param(*c, id=f"{c[0]}-page{c[1]}-{c[2]}".replace("pageNone", "non_paged"))
        for c in GRAPH_CASES
    ],
)
def test_cuda_graph_bad_value_at_replay(form: str, page, what: str):
    inputs = graph_inputs(page, case_seed("graph", form, page, what))
    graph, (out, lse) = capture_decode(inputs, form)
    torch.cuda.synchronize()
    assert flash_mla.read_error_record() is None  # warm-up and capture with good values
    replay_and_check_good(graph, inputs, out, lse)

    good_table = None if inputs.block_table is None else inputs.block_table.clone()
    good_lengths = inputs.cache_seqlens.clone()
    break_inputs(inputs, what)  # in place, into the captured tensors
    expected = only_error(inputs, BAD_KINDS[what])
    graph.replay()
    torch.cuda.synchronize()
    check_bad_call(inputs, out, lse, expected, causal=True)

    # Good values again: correct results (the NaN rows are overwritten) and no record.
    if good_table is not None:
        inputs.block_table.copy_(good_table)
    inputs.cache_seqlens.copy_(good_lengths)
    flash_mla.clear_error_record()
    replay_and_check_good(graph, inputs, out, lse)


@pytest.mark.parametrize("page", [53, None], ids=["page53", "non_paged"])
def test_cuda_graph_checked_mode(page, monkeypatch):
    """FLASH_MLA_CHECKED=1 while capturing: the capture neither raises nor synchronises; a
    replay with a bad value records it and marks the sequence NaN; an eager checked call with
    the bad value raises."""
    monkeypatch.setenv(CHECKED, "1")
    inputs = graph_inputs(page, case_seed("graph checked", page))
    graph, (out, lse) = capture_decode(inputs, "plan_inside")
    torch.cuda.synchronize()
    assert flash_mla.read_error_record() is None
    replay_and_check_good(graph, inputs, out, lse)

    good_table = None if inputs.block_table is None else inputs.block_table.clone()
    good_lengths = inputs.cache_seqlens.clone()
    what = "beyond_capacity" if page is None else "entry_num_blocks_middle_page"
    break_inputs(inputs, what)
    expected = only_error(inputs, BAD_KINDS[what])
    graph.replay()  # no exception: a replay runs no Python
    torch.cuda.synchronize()
    check_bad_call(inputs, out, lse, expected, causal=True)

    flash_mla.clear_error_record()
    with pytest.raises(ValueError) as info:
        decode(inputs, None, None, causal=True)
    assert names_bad_value(str(info.value), expected), str(info.value)
    assert flash_mla.read_error_record() is None

    if good_table is not None:
        inputs.block_table.copy_(good_table)
    inputs.cache_seqlens.copy_(good_lengths)
    replay_and_check_good(graph, inputs, out, lse)


# ---- other errors keep naming their argument ----------------------------------------------------


@pytest.mark.parametrize("page", [53, 1, None], ids=["page53", "page1", "non_paged"])
def test_shape_errors_still_name_their_argument(page):
    paging = dict(paged=False) if page is None else dict(page_block_size=page)
    args = dict(s_q=1, d_qk=576, dtype=torch.bfloat16, seed=3, **paging)
    uneven = make_decode_inputs([100, 5], h_q=3, h_kv=2, **args)
    expect_error(lambda: decode(uneven), "num_heads_q", "num_heads_kv", "q", "k_cache")

    inputs = make_decode_inputs([100, 5], h_q=16, h_kv=1, **args)
    narrow = dataclasses.replace(
        inputs,
        q=inputs.q[..., :320].contiguous(),
        k_cache=inputs.k_cache[..., :320].contiguous(),
    )
    expect_error(lambda: decode(narrow), "head_dim_qk", "head_dim_v", "q", "k_cache")
    expect_error(lambda: decode(dataclasses.replace(inputs, cache_seqlens=None)), "cache_seqlens")
    expect_error(
        lambda: decode(dataclasses.replace(inputs, cache_seqlens=inputs.cache_seqlens.long())),
        "cache_seqlens",
    )
    # Still usable after the errors, with no record.
    run_and_check(inputs, None, None, causal=False)


def test_non_paged_shape_errors():
    inputs = make_decode_inputs(
        [100, 5, 7], s_q=1, h_q=16, h_kv=1, d_qk=576, dtype=torch.bfloat16, paged=False, seed=5
    )
    # k_cache must hold one row per sequence when block_table is None.
    expect_error(
        lambda: decode(dataclasses.replace(inputs, k_cache=inputs.k_cache[:2])),
        "k_cache",
        "block_table",
        "num_blocks",
    )
    # Rows must stay 16-byte aligned: a token stride of 580 elements is not.
    wide = torch.zeros(3, 100, 1, 580, dtype=torch.bfloat16, device=inputs.k_cache.device)
    expect_error(
        lambda: decode(dataclasses.replace(inputs, k_cache=wide[..., :576])),
        "k_cache",
        "k_token_stride",
        "k_block_stride",
        "k_head_stride",
    )
    # A cache without tokens per sequence (nor a page size of 0 when paged).
    expect_error(
        lambda: decode(dataclasses.replace(inputs, k_cache=inputs.k_cache[:, :0])),
        "k_cache",
        "page_block_size",
    )
    paged = make_decode_inputs(
        [10, 5, 7], s_q=1, h_q=16, h_kv=1, d_qk=576, dtype=torch.bfloat16, seed=6
    )
    expect_error(
        lambda: decode(dataclasses.replace(paged, k_cache=paged.k_cache[:, :0])),
        "k_cache",
        "page_block_size",
    )
    run_and_check(inputs, None, None, causal=True)
