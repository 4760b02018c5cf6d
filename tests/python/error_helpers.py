"""What the bad-input tests share (test_errors.py, test_sparse_errors.py,
test_sparse_prefill_errors.py): the exceptions a rejected argument may raise, and the check that
the message names the argument. Imported like compile_graph_helpers.py."""

import re
from typing import Callable

import pytest

ERRORS = (RuntimeError, ValueError)  # NotImplementedError is a RuntimeError


def expect_error(call: Callable[[], object], *names: str, error=ERRORS) -> str:
    """call() must raise `error` with a message naming one of `names` (as a whole word)."""
    with pytest.raises(error) as info:
        call()
    message = str(info.value)
    assert any(re.search(rf"\b{re.escape(name)}\b", message) for name in names), (
        f"the message should name one of {names}: {message}"
    )
    return message
