"""Fuzz runs of splitter + decoder: a short one by default, the ≥ 1,000,000-input run with -m slow."""

from __future__ import annotations

import pytest

from bench.fuzz_dlt645 import run


def test_fuzz_short() -> None:
    count, decoded, unexpected = run(20_000, seed=7)
    assert unexpected == 0
    assert decoded > 1000  # the mutations must reach the field decoders, not only the framer


@pytest.mark.slow
def test_fuzz_one_million() -> None:
    count, decoded, unexpected = run(1_000_000, seed=1)
    assert count == 1_000_000
    assert unexpected == 0
