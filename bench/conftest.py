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


_FIGURES: list = []


@pytest.fixture
def figures():
    """figures(line): a derived figure (a rate, a share) printed in the summary at the end of the run;
    `line` may be a callable returning the line (or None to print nothing), evaluated then, when the
    other benchmarks it combines have run."""
    return _FIGURES.append


def pytest_terminal_summary(terminalreporter):
    lines = [f() if callable(f) else f for f in _FIGURES]
    lines = [line for line in lines if line]
    if lines:
        terminalreporter.section("derived figures")
        for line in lines:
            terminalreporter.write_line(line)
