"""Benchmarks: the compiled kernel and its reference timed in the same run; ratios are the figure."""
from __future__ import annotations

import pytest

from ghn_ext.ops import HAS_EXTENSION


def pytest_collection_modifyitems(config, items):
    if HAS_EXTENSION:
        return
    skip = pytest.mark.skip(reason="compiled extension not built: nothing to compare the reference with")
    for item in items:
        item.add_marker(skip)
