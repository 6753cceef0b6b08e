"""Published accuracies of NAS-Bench-201 cells as a ground truth for predictors: a CSV file with an `arch`
column of the benchmark's cell strings and numeric accuracy columns (`../shared/data/nb201/dev_1000.csv`
has 200-epoch test accuracies on CIFAR-10, CIFAR-100 and ImageNet16-120 and a 12-epoch CIFAR-10
validation accuracy). Such labels measure predictors; nothing in the library is fitted to them.
"""
from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ghn_ext.core.graph import GraphError
from ghn_ext.spaces import nb201
from ghn_ext.core.checks import InputError

DEFAULT_COLUMN = "cifar10_test_200ep"


class TruthTableError(InputError):
    """A ground-truth table is missing, malformed, or lacks the asked column."""


@dataclass(frozen=True)
class TruthTable:
    path: Path
    archs: list[str]                 # cell strings, in file order
    columns: dict[str, np.ndarray]   # name -> one value per cell

    def column(self, name: str) -> np.ndarray:
        if name not in self.columns:
            raise TruthTableError(f"{self.path} has no column {name!r}; it has {', '.join(self.columns)}")
        return self.columns[name]

    def head(self, n: int) -> "TruthTable":
        """The first n cells (the file's order is random, so any prefix is a random subset)."""
        if n < 1:
            raise TruthTableError(f"a subset needs at least one cell, not {n}")
        return TruthTable(self.path, self.archs[:n], {k: v[:n] for k, v in self.columns.items()})


def read_truth_table(path: str | Path) -> TruthTable:
    """The table at `path`, checked: every arch a valid, distinct cell string, every value a finite number."""
    path = Path(path)
    if not path.is_file():
        raise TruthTableError(f"ground-truth table {path} does not exist")
    try:
        with path.open(newline="") as f:
            rows = list(csv.reader(f))
    except (UnicodeDecodeError, csv.Error) as exc:
        raise TruthTableError(f"{path} is not a readable CSV table ({exc.__class__.__name__})") from None
    if not rows or "arch" not in rows[0]:
        raise TruthTableError(f"{path} needs a header line with an 'arch' column")
    header = rows[0]
    arch_col = header.index("arch")
    names = [h for h in header if h != "arch"]
    if not names:
        raise TruthTableError(f"{path} has no accuracy column besides 'arch'")
    archs, values, seen = [], [], set()
    for lineno, row in enumerate(rows[1:], start=2):
        if not row:
            continue
        if len(row) != len(header):
            raise TruthTableError(f"{path}:{lineno}: {len(row)} fields, the header has {len(header)}")
        try:
            arch = nb201.to_string(nb201.parse(row[arch_col]))
        except GraphError as exc:
            raise TruthTableError(f"{path}:{lineno}: {exc}") from None
        if arch in seen:
            raise TruthTableError(f"{path}:{lineno}: cell {arch} is listed twice")
        seen.add(arch)
        try:
            numbers = [float(v) for k, v in zip(header, row) if k != "arch"]
        except ValueError:
            raise TruthTableError(f"{path}:{lineno}: an accuracy is not a number") from None
        if not all(np.isfinite(numbers)):
            raise TruthTableError(f"{path}:{lineno}: an accuracy is not finite")
        archs.append(arch)
        values.append(numbers)
    if not archs:
        raise TruthTableError(f"{path} lists no cells")
    table = np.asarray(values, dtype=float)
    return TruthTable(path, archs, {name: table[:, i] for i, name in enumerate(names)})


__all__ = ["DEFAULT_COLUMN", "TruthTable", "TruthTableError", "read_truth_table"]
