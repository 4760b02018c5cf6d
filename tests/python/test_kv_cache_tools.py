"""The FP8 KV-cache tools (flash_mla.kv_cache) against a pure-PyTorch quantizer written here from
the documented rule: byte-for-byte equality, the round-trip error bound, skipped slots, the
layouts' padding, CUDA graphs / torch.compile, and errors that name the argument."""

import re
from typing import Callable

import pytest
import torch

if not torch.cuda.is_available():
    pytest.skip("flash_mla tests need a CUDA GPU", allow_module_level=True)

import flash_mla  # noqa: E402,F401  (registers the operators)
from flash_mla.kv_cache import (  # noqa: E402
    FP8KVCacheLayout,
    dequantize_k_cache,
    empty_k_cache,
    model1_block_bytes,
    quantize_k_cache,
    write_k_cache,
)

# layout -> (head_dim, nope_dim, tile_size)
META = {"v32": (576, 512, 128), "model1": (512, 448, 64)}
FP8_LAYOUTS = ["v32", "model1"]
PAGES = [1, 2, 53, 64]
ERRORS = (RuntimeError, ValueError)  # NotImplementedError is a RuntimeError


@pytest.fixture(autouse=True)
def no_sticky_cuda_error():
    yield
    torch.cuda.synchronize()  # raises if a call left an asynchronous CUDA error


# ---------------------------------------------------------------------------------------------
# The rule in plain PyTorch.


def ref_scales(nope: torch.Tensor, tile: int) -> torch.Tensor:
    """[..., nope_dim] bfloat16 -> [..., groups] float32 power-of-two scales: the smallest power
    of two >= max(amax / 448, 1e-4), from the exact exponent (frexp), not from log2."""
    groups = nope.float().unflatten(-1, (-1, tile))
    amax = groups.abs().amax(dim=-1)
    wanted = torch.clamp_min(amax / 448.0, 1e-4)
    mantissa, exponent = torch.frexp(wanted)  # wanted = mantissa * 2^exponent, mantissa in [0.5, 1)
    exponent = torch.where(mantissa == 0.5, exponent - 1, exponent)
    return power_of_two(exponent)


def power_of_two(exponent: torch.Tensor) -> torch.Tensor:
    """2^exponent as float32, built from the exponent bits (exact; -126 <= exponent <= 127)."""
    return ((exponent.to(torch.int32) + 127) << 23).view(torch.float32)


def ref_token_parts(kv: torch.Tensor, layout: str):
    """[n, d] bfloat16 -> (e4m3 bytes [n, nope], scales [n, groups] float32, RoPE bytes [n, 128])."""
    _, nope_dim, tile = META[layout]
    nope = kv[:, :nope_dim]
    scales = ref_scales(nope, tile)
    values = nope.float().unflatten(-1, (-1, tile)) / scales[..., None]  # exact: powers of two
    e4m3 = values.flatten(-2).to(torch.float8_e4m3fn).view(torch.uint8)
    rope = kv[:, nope_dim:].contiguous().view(torch.uint8)
    return e4m3, scales, rope


def ref_v32_rows(kv: torch.Tensor) -> torch.Tensor:
    """[n, 576] bfloat16 -> [n, 656] bytes of V3.2 token rows."""
    e4m3, scales, rope = ref_token_parts(kv, "v32")
    return torch.cat([e4m3, scales.contiguous().view(torch.uint8), rope], dim=-1)


def ref_model1_rows(kv: torch.Tensor):
    """[n, 512] bfloat16 -> ([n, 576] data row bytes, [n, 8] scale row bytes)."""
    e4m3, scales, rope = ref_token_parts(kv, "model1")
    e8m0 = (scales.view(torch.int32) >> 23).to(torch.uint8)  # biased exponent = e8m0 byte
    pad = torch.zeros_like(e8m0[:, :1])
    return torch.cat([e4m3, rope], dim=-1), torch.cat([e8m0, pad], dim=-1)


def ref_quantize(k_cache: torch.Tensor, layout: str) -> torch.Tensor:
    """[blocks, page, 1, d] bfloat16 -> the bytes of the cache's view: [blocks, page * 656] (v32)
    or [blocks, page * 584] (model1: data rows, then scale rows)."""
    blocks, page, _, d = k_cache.shape
    kv = k_cache.reshape(blocks * page, d)
    if layout == "v32":
        return ref_v32_rows(kv).view(blocks, page * 656)
    data, scale_rows = ref_model1_rows(kv)
    return torch.cat([data.view(blocks, page * 576), scale_rows.view(blocks, page * 8)], dim=-1)


def cache_bytes(cache: torch.Tensor) -> torch.Tensor:
    """The bytes of a cache view as [blocks, page * bytes per token] (a view, no copy)."""
    b = cache if cache.dtype == torch.uint8 else cache.view(torch.uint8)
    return b.reshape(b.shape[0], b.shape[1] * b.shape[3])


def random_k_cache(blocks: int, page: int, d: int, gen: torch.Generator) -> torch.Tensor:
    """Fresh random bfloat16 values, each 64-value group with its own magnitude 2^U(-40, 40); some
    groups all zero, some with exact zeros, some huge (2^120) or tiny (2^-120)."""
    shape = (blocks, page, 1, d // 64, 64)
    normal = torch.randn(shape, generator=gen, device="cuda")
    exponent = torch.randint(-40, 41, shape[:-1] + (1,), generator=gen, device="cuda").float()
    kind = torch.randint(0, 12, shape[:-1] + (1,), generator=gen, device="cuda")
    exponent = torch.where(kind == 1, 120.0, torch.where(kind == 2, -120.0, exponent))
    values = normal * torch.exp2(exponent)
    values = torch.where(kind == 0, 0.0, values)
    holes = torch.rand(shape, generator=gen, device="cuda") < 0.5
    values = torch.where((kind == 3) & holes, 0.0, values)
    return values.flatten(-2).to(torch.bfloat16)


def new_gen() -> torch.Generator:
    gen = torch.Generator(device="cuda")
    gen.seed()  # fresh data every run; the seed is printed on failure below
    return gen


# ---------------------------------------------------------------------------------------------
# Quantization, byte for byte.


@pytest.mark.parametrize("page", PAGES)
@pytest.mark.parametrize("layout", FP8_LAYOUTS)
def test_quantize_matches_pure_pytorch_byte_for_byte(layout: str, page: int):
    gen = new_gen()
    d = META[layout][0]
    k_cache = random_k_cache(max(2, 300 // page), page, d, gen)
    quant = quantize_k_cache(k_cache, layout)
    assert quant.dtype == torch.float8_e4m3fn
    if layout == "v32":
        assert quant.shape == (k_cache.shape[0], page, 1, 656)
    else:
        assert quant.shape == (k_cache.shape[0], page, 1, 584)
        assert page == 1 or quant.stride(1) == 584
        assert k_cache.shape[0] == 1 or quant.stride(0) == model1_block_bytes(page)
    want = ref_quantize(k_cache, layout)
    got = cache_bytes(quant)
    if not torch.equal(got, want):
        diff = (got != want).nonzero()
        pytest.fail(
            f"seed {gen.initial_seed()}: {diff.shape[0]} bytes differ, first (block, byte): "
            f"{diff[:5].tolist()}"
        )


def test_quantize_accepts_flashmla_enum_and_strings():
    gen = new_gen()
    k_cache = random_k_cache(3, 64, 576, gen)
    by_string = cache_bytes(quantize_k_cache(k_cache, "v32"))
    by_enum = cache_bytes(quantize_k_cache(k_cache, FP8KVCacheLayout.V32_FP8Sparse))
    assert torch.equal(by_string, by_enum)
    k512 = random_k_cache(3, 64, 512, gen)
    assert torch.equal(
        cache_bytes(quantize_k_cache(k512, "model1")),
        cache_bytes(quantize_k_cache(k512, FP8KVCacheLayout.MODEL1_FP8Sparse)),
    )
    assert FP8KVCacheLayout.MODEL1_FP8Sparse.get_meta() == (512, 448, 64, 64, 7)


def test_hand_computed_v32_token():
    # Group 0 all 1.0: scale 2^-8, 1 / 2^-8 = 256 -> e4m3 0x78. Group 1 amax 448: scale 1.
    # Group 2 zeros: scale max(0, 1e-4) -> 2^-13. Group 3: 3 * 2^-8 -> 2^-13 too, 96 -> 0x6c.
    kv = torch.ones(1, 1, 1, 576, dtype=torch.bfloat16, device="cuda")
    kv[..., 128] = 448.0
    kv[..., 129] = -2.0
    kv[..., 256:384] = 0.0
    kv[..., 384:512] = 3 * 2**-8
    row = cache_bytes(quantize_k_cache(kv, "v32"))[0]
    assert row[0].item() == 0x78 and row[128].item() == 0x7E and row[129].item() == 0xC0
    assert row[130].item() == 0x38 and row[256].item() == 0 and row[384].item() == 0x6C
    scales = row[512:528].view(torch.float32).tolist()
    assert scales == [2**-8, 1.0, 2**-13, 2**-13]


# ---------------------------------------------------------------------------------------------
# Dequantization and the round trip.


@pytest.mark.parametrize("page", PAGES)
@pytest.mark.parametrize("layout", FP8_LAYOUTS)
def test_round_trip_within_e4m3_bound(layout: str, page: int):
    gen = new_gen()
    d, nope_dim, tile = META[layout]
    k_cache = random_k_cache(max(2, 300 // page), page, d, gen)
    deq = dequantize_k_cache(quantize_k_cache(k_cache, layout), layout)
    assert deq.dtype == torch.bfloat16 and deq.shape == k_cache.shape
    x = k_cache.double().squeeze(2)
    y = deq.double().squeeze(2)
    assert torch.equal(y[..., nope_dim:], x[..., nope_dim:]), "RoPE values must be copied"
    scales = ref_scales(k_cache.squeeze(2)[..., :nope_dim], tile).double()
    scale = scales.repeat_interleave(tile, dim=-1)
    # e4m3 keeps 3 mantissa bits: half an ulp is 2^-4 of |x| for normals (|x| / scale >= 2^-6)
    # and 2^-10 * scale below (half the subnormal step 2^-9); float(e4m3) * scale has 4
    # significant bits, so its bfloat16 rounding is exact.
    xn = x[..., :nope_dim]
    subnormal = xn.abs() / scale < 2**-6
    bound = torch.where(subnormal, scale * 2**-10, xn.abs() * 2**-4)
    err = (y[..., :nope_dim] - xn).abs()
    bad = err > bound
    assert not bad.any(), (
        f"seed {gen.initial_seed()}: {int(bad.sum())} values beyond the bound, first at "
        f"{bad.nonzero()[:3].tolist()}"
    )


@pytest.mark.parametrize("layout", FP8_LAYOUTS)
def test_dequantize_matches_pure_pytorch_bit_for_bit(layout: str):
    gen = new_gen()
    d, nope_dim, tile = META[layout]
    k_cache = random_k_cache(5, 53, d, gen)
    quant = quantize_k_cache(k_cache, layout)
    deq = dequantize_k_cache(quant, layout).squeeze(2)
    raw = cache_bytes(quant).view(5, 53, -1) if layout == "v32" else None
    if layout == "v32":
        values = raw[..., :512].view(torch.float8_e4m3fn).float()
        scales = raw[..., 512:528].contiguous().view(torch.float32)
        rope = raw[..., 528:].contiguous().view(torch.bfloat16)
    else:
        blocks = cache_bytes(quant)
        data = blocks[:, : 53 * 576].reshape(5, 53, 576)
        values = data[..., :448].contiguous().view(torch.float8_e4m3fn).float()
        rope = data[..., 448:].contiguous().view(torch.bfloat16)
        e8m0 = blocks[:, 53 * 576 :].reshape(5, 53, 8)[..., :7].to(torch.int32)
        scales = power_of_two(e8m0 - 127)
    want_nope = (values.unflatten(-1, (-1, tile)) * scales[..., None]).flatten(-2).bfloat16()
    want = torch.cat([want_nope, rope], dim=-1)
    assert torch.equal(deq.view(torch.int16), want.view(torch.int16))


def test_model1_pad_bytes_are_zero_and_padding_untouched():
    gen = new_gen()
    page, blocks = 3, 4  # 3 * 584 = 1752 bytes used of 2304
    storage = torch.randint(0, 256, (blocks, model1_block_bytes(page) + 64), generator=gen,
                            dtype=torch.uint8, device="cuda")
    before = storage.clone()
    cache = storage[:, : page * 584].view(blocks, page, 1, 584)
    kv = random_k_cache(1, blocks * page, 512, gen).view(blocks * page, 512)
    write_k_cache(kv, torch.arange(blocks * page, device="cuda"), cache, "model1")
    scale_rows = storage[:, page * 576 : page * 584].reshape(blocks, page, 8)
    assert torch.all(scale_rows[..., 7] == 0), "the pad byte of every scale row is 0"
    assert torch.equal(storage[:, page * 584 :], before[:, page * 584 :]), "padding was written"
    want = ref_quantize(kv.view(blocks, page, 1, 512), "model1")
    assert torch.equal(storage[:, : page * 584], want)


# ---------------------------------------------------------------------------------------------
# write_k_cache: slots.


@pytest.mark.parametrize("slot_dtype", [torch.int64, torch.int32])
@pytest.mark.parametrize("layout", FP8_LAYOUTS + ["bf16"])
def test_write_skips_invalid_slots(layout: str, slot_dtype: torch.dtype):
    gen = new_gen()
    d = META.get(layout, (576,))[0]
    blocks, page = 6, 53
    num_slots = blocks * page
    if layout == "bf16":
        cache = torch.randn(blocks, page, 1, d, generator=gen, device="cuda").bfloat16()
    else:
        cache = empty_k_cache(blocks, page, layout, "cuda")
        raw = cache.view(torch.uint8)
        raw.copy_(torch.randint(0, 256, raw.shape, generator=gen, dtype=torch.uint8, device="cuda"))
    before = cache.clone()
    n = 200
    slots = torch.randperm(num_slots, generator=gen, device="cuda")[:n]
    invalid = torch.tensor([-1, num_slots, num_slots + 7, -5, 2**31 - 1], device="cuda")
    replace = torch.rand(n, generator=gen, device="cuda") < 0.3
    slots = torch.where(replace, invalid[torch.randint(0, 5, (n,), generator=gen, device="cuda")],
                        slots)
    kv = random_k_cache(1, n, d, gen).view(n, d)
    write_k_cache(kv, slots.to(slot_dtype), cache, layout)

    valid = (slots >= 0) & (slots < num_slots)
    written = torch.zeros(num_slots, dtype=torch.bool, device="cuda")
    written[slots[valid]] = True
    written = written.view(blocks, page)
    if layout == "bf16":
        assert torch.equal(cache[~written].view(torch.int16), before[~written].view(torch.int16))
        flat = cache.view(num_slots, d)
        assert torch.equal(flat[slots[valid]].view(torch.int16), kv[valid].view(torch.int16))
        return
    got = cache_bytes(cache).view(blocks, page, -1) if layout == "v32" else None
    if layout == "v32":
        assert torch.equal(got[~written], cache_bytes(before).view(blocks, page, -1)[~written])
        assert torch.equal(got.view(num_slots, 656)[slots[valid]], ref_v32_rows(kv[valid]))
    else:
        data = lambda c: cache_bytes(c)[:, : page * 576].reshape(blocks, page, 576)  # noqa: E731
        scale = lambda c: cache_bytes(c)[:, page * 576 :].reshape(blocks, page, 8)  # noqa: E731
        assert torch.equal(data(cache)[~written], data(before)[~written])
        assert torch.equal(scale(cache)[~written], scale(before)[~written])
        want_data, want_scale = ref_model1_rows(kv[valid])
        s = slots[valid]
        assert torch.equal(data(cache)[s // page, s % page], want_data)
        assert torch.equal(scale(cache)[s // page, s % page], want_scale)


def test_write_with_a_block_gap_and_uint8_cache():
    # FlashMLA's V3.2 quantizer leaves one token of gap after each block: any block stride works.
    gen = new_gen()
    storage = torch.full((4, 65, 1, 656), 0xA5, dtype=torch.uint8, device="cuda")
    cache = storage[:, :64]
    kv = random_k_cache(4, 64, 576, gen)
    write_k_cache(kv.view(256, 576), torch.arange(256, device="cuda"), cache, "v32")
    assert torch.all(storage[:, 64] == 0xA5)
    assert torch.equal(cache.reshape(4, 64 * 656), ref_quantize(kv, "v32"))


def test_write_in_a_cuda_graph_and_under_torch_compile():
    gen = new_gen()
    cache = empty_k_cache(8, 64, "model1", "cuda")
    kv = random_k_cache(1, 100, 512, gen).view(100, 512)
    slots = torch.randperm(512, generator=gen, device="cuda")[:100]
    eager = empty_k_cache(8, 64, "model1", "cuda")
    write_k_cache(kv, slots, eager, "model1")

    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        write_k_cache(kv, slots, cache, "model1")  # warm-up outside the capture
    torch.cuda.current_stream().wait_stream(stream)
    cache.view(torch.uint8).zero_()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        write_k_cache(kv, slots, cache, "model1")
    graph.replay()
    torch.cuda.synchronize()
    assert torch.equal(cache_bytes(cache), cache_bytes(eager))

    torch._dynamo.reset()

    @torch.compile(fullgraph=True, backend="aot_eager")
    def step(kv, slots, cache):
        write_k_cache(kv, slots, cache, "model1")
        return dequantize_k_cache(cache, "model1") * 2

    compiled_cache = empty_k_cache(8, 64, "model1", "cuda")
    out = step(kv, slots, compiled_cache)
    assert torch.equal(cache_bytes(compiled_cache), cache_bytes(eager))
    assert torch.equal(out, dequantize_k_cache(eager, "model1") * 2)


# ---------------------------------------------------------------------------------------------
# Errors name the argument.


def expect_error(call: Callable[[], object], name: str, error=ERRORS) -> str:
    with pytest.raises(error) as info:
        call()
    message = str(info.value)
    assert re.search(rf"\b{re.escape(name)}\b", message), f"should name {name}: {message}"
    return message


def valid_write_args(layout: str = "v32"):
    d = META[layout][0]
    kv = torch.randn(10, d, device="cuda").bfloat16()
    slots = torch.arange(10, device="cuda")
    return kv, slots, empty_k_cache(2, 64, layout, "cuda")


def test_errors_name_slot_mapping():
    kv, slots, cache = valid_write_args()
    expect_error(lambda: write_k_cache(kv, slots.float(), cache, "v32"), "slot_mapping")
    expect_error(lambda: write_k_cache(kv, slots[:5], cache, "v32"), "slot_mapping")
    expect_error(lambda: write_k_cache(kv, slots.view(2, 5), cache, "v32"), "slot_mapping")
    expect_error(lambda: write_k_cache(kv, slots.cpu(), cache, "v32"), "slot_mapping")
    with pytest.raises(ValueError, match="slot_mapping"):
        write_k_cache(kv, slots.to(torch.int16), cache, "v32")


def test_errors_name_kv():
    kv, slots, cache = valid_write_args()
    expect_error(lambda: write_k_cache(kv.float(), slots, cache, "v32"), "kv")
    expect_error(lambda: write_k_cache(kv[:, :512], slots, cache, "v32"), "kv")
    expect_error(lambda: write_k_cache(kv.view(10, 1, 576), slots, cache, "v32"), "kv")
    expect_error(lambda: write_k_cache(kv.cpu(), slots, cache, "v32"), "kv")


def test_errors_name_k_cache():
    kv, slots, cache = valid_write_args()
    expect_error(lambda: write_k_cache(kv, slots, cache[..., :640], "v32"), "k_cache")
    expect_error(lambda: write_k_cache(kv, slots, cache.view(torch.int8), "v32"), "k_cache")
    expect_error(lambda: write_k_cache(kv, slots, cache[:, :, 0], "v32"), "k_cache")
    expect_error(lambda: write_k_cache(kv.cpu(), slots.cpu(), cache.cpu(), "v32"), "kv")
    expect_error(lambda: dequantize_k_cache(cache.cpu(), "v32"), "k_cache")
    # MODEL1: a dense [blocks, page, 1, 584] tensor lacks the block padding.
    dense = torch.zeros(2, 3, 1, 584, dtype=torch.float8_e4m3fn, device="cuda")
    kv512 = torch.randn(6, 512, device="cuda").bfloat16()
    expect_error(
        lambda: write_k_cache(kv512, torch.arange(6, device="cuda"), dense, "model1"), "k_cache"
    )
    expect_error(lambda: dequantize_k_cache(dense, "model1"), "k_cache")
    # A cache that does not start on a 16-byte boundary.
    raw = torch.zeros(2 * 64 * 656 + 16, dtype=torch.uint8, device="cuda")
    shifted = raw[8 : 8 + 2 * 64 * 656].view(2, 64, 1, 656)
    expect_error(lambda: write_k_cache(kv, slots, shifted, "v32"), "k_cache")


def test_errors_name_layout_and_input():
    kv, slots, cache = valid_write_args()
    expect_error(lambda: write_k_cache(kv, slots, cache, "fp8"), "layout")
    expect_error(lambda: quantize_k_cache(cache, "nvfp4"), "layout")
    bf16 = torch.randn(2, 64, 1, 576, device="cuda").bfloat16()
    expect_error(lambda: quantize_k_cache(bf16.float(), "v32"), "k_cache")
    expect_error(lambda: quantize_k_cache(bf16, "model1"), "k_cache")
    expect_error(lambda: quantize_k_cache(bf16.squeeze(2), "v32"), "k_cache")


def test_misaligned_kv_rows_are_copied_not_rejected():
    gen = new_gen()
    wide = random_k_cache(1, 10, 640, gen).view(10, 640)
    kv = wide[:, 4:580]  # rows 8 bytes off a 16-byte boundary
    cache = empty_k_cache(1, 64, "v32", "cuda")
    write_k_cache(kv, torch.arange(10, device="cuda"), cache, "v32")
    assert torch.equal(cache_bytes(cache)[0, : 10 * 656], ref_v32_rows(kv.contiguous()).view(-1))
