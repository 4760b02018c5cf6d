"""Shared pytest setup for the Python tests of flash_mla.

The tests need a CUDA GPU and skip without one. scripts/gpu_tests.sh sets
FLASH_MLA_REQUIRE_GPU=1 so that a device run fails loudly instead of skipping everything.
"""

import os

import pytest


def pytest_configure(config: pytest.Config) -> None:
    if os.environ.get("FLASH_MLA_REQUIRE_GPU") != "1":
        return
    import torch

    if not torch.cuda.is_available():
        raise pytest.UsageError("FLASH_MLA_REQUIRE_GPU=1 but torch.cuda.is_available() is False")


def pytest_terminal_summary(terminalreporter) -> None:
    """Shows how many elements passed only by the rounding bounds of flash_mla.testing."""
    try:
        from flash_mla.testing import ROUNDING_BOUND_STATS
    except ImportError:
        return
    if ROUNDING_BOUND_STATS["checks"]:
        terminalreporter.write_line(
            f"reference checks (decode and prefill), rounding-bound usage: {ROUNDING_BOUND_STATS}"
        )
