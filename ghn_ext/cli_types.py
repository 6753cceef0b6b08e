"""argparse types that check a numeric flag at the command line: a value outside its range is refused
with a message naming the range (argparse adds the flag), before any work starts."""
from __future__ import annotations

import argparse
import math


def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None


def positive_int(text: str) -> int:
    value = _integer(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def nonnegative_int(text: str) -> int:
    value = _integer(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def learning_rate(text: str) -> float:
    """A learning rate in (0, 10]: larger ones only overflow the optimiser's state."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not (math.isfinite(value) and 0.0 < value <= 10.0):
        raise argparse.ArgumentTypeError(f"must be a learning rate in (0, 10], got {text}")
    return value
