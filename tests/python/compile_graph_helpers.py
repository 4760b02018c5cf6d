"""What the torch.compile / CUDA-graph tests of dense and sparse decoding share
(test_compile_graph.py, test_sparse_compile_graph.py), imported after their CUDA check. pytest's
default (prepend) import mode puts this folder, which has no __init__.py, on sys.path."""

from typing import Callable, Sequence

import pytest
import torch


def _have_triton() -> bool:
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


BACKENDS = [
    "aot_eager",
    pytest.param(
        "inductor", marks=pytest.mark.skipif(not _have_triton(), reason="inductor needs triton")
    ),
]


def compiled_matches_eager(step: Callable, args: Sequence, backend: str) -> tuple:
    """Runs `step` compiled (fullgraph) and eagerly on `args`; asserts that both give the same
    (out, lse) bits and returns the compiled ones."""
    compiled = torch.compile(step, fullgraph=True, backend=backend)
    out_c, lse_c = compiled(*args)
    out_e, lse_e = step(*args)
    torch.testing.assert_close(out_c, out_e, rtol=0, atol=0, equal_nan=True)
    torch.testing.assert_close(lse_c, lse_e, rtol=0, atol=0, equal_nan=True)
    return out_c, lse_c


def opcheck(op, args: tuple) -> None:
    """torch.library.opcheck of the schema and the fake (meta) implementation."""
    torch.library.opcheck(op, args, test_utils=("test_schema", "test_faketensor"))


def capture(fn: Callable[[], tuple]) -> tuple[torch.cuda.CUDAGraph, tuple]:
    """Warms `fn` up on a side stream, then captures it in a CUDA graph."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        fn()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        outputs = fn()
    return graph, outputs
