"""What the randomized case grids of the decode and prefill tests share (test_dense_decode.py,
test_sparse_decode.py, test_sparse_prefill.py): a stable seed per case and balanced value lists.
Imported like compile_graph_helpers.py (this folder is on sys.path under pytest)."""

import random
import zlib


def case_seed(*params: object) -> int:
    """A seed from the case's parameters: the same case draws the same data in every run."""
    return zlib.crc32(repr(params).encode())


def balanced(values, count: int, rng: random.Random) -> list:
    """`count` values cycling through `values`, shuffled: each value appears about equally."""
    seq = [values[i % len(values)] for i in range(count)]
    rng.shuffle(seq)
    return seq
