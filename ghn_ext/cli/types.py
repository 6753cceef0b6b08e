"""argparse types that check a numeric flag at the command line: a value outside its range is refused
with a message naming the range (argparse adds the flag), before any work starts."""
from __future__ import annotations

import argparse
import math
from typing import Callable

from ghn_ext.core.checks import MAX_SEED


def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None


MAX_COUNT = 2 ** 31 - 1  # counts beyond this (steps, images, channels) can only exhaust the machine


def _bounded(text: str, low: int, high: int, what: str) -> int:
    value = _integer(text)
    if not low <= value <= high:
        raise argparse.ArgumentTypeError(f"must be {what} in [{low}, {high}], got {value}")
    return value


def positive_int(text: str) -> int:
    return _bounded(text, 1, MAX_COUNT, "a positive integer")


def nonnegative_int(text: str) -> int:
    return _bounded(text, 0, MAX_COUNT, "an integer")


def seed(text: str) -> int:
    return _bounded(text, 0, MAX_SEED, "a seed")


def fraction(text: str) -> float:
    """A probability or decay in [0, 1)."""
    return _real(text, lambda v: 0.0 <= v < 1.0, "a number in [0, 1)")


def nonnegative_real(text: str) -> float:
    return _real(text, lambda v: v >= 0.0, "a finite number >= 0")


def int_list(item: Callable[[str], int]) -> Callable[[str], list[int]]:
    """Comma-separated integers, each checked by `item` (positive_int, nonnegative_int)."""
    def parse(text: str) -> list[int]:
        return [item(x.strip()) for x in text.split(",") if x.strip()]
    return parse


def op_weights(text: str) -> dict[str, float] | str:
    """`op=weight,op=weight,...`: relative weights of named ops (which ops exist is the space's to check),
    or `uniform`."""
    if text.strip() == "uniform":
        return "uniform"
    weights = {}
    for item in (x.strip() for x in text.split(",") if x.strip()):
        op, sep, value = item.partition("=")
        if not sep or not op.strip():
            raise argparse.ArgumentTypeError(f"expected op=weight pairs separated by commas, got {item!r}")
        weights[op.strip()] = nonnegative_real(value.strip())
    if not weights:
        raise argparse.ArgumentTypeError("expected at least one op=weight pair")
    return weights


def _real(text: str, ok: Callable[[float], bool], allowed: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not (math.isfinite(value) and ok(value)):
        raise argparse.ArgumentTypeError(f"must be {allowed}, got {text}")
    return value


def learning_rate(text: str) -> float:
    """A learning rate in (0, 10]: larger ones only overflow the optimiser's state."""
    return _real(text, lambda v: 0.0 < v <= 10.0, "a learning rate in (0, 10]")


def shard_argument(text: str) -> tuple[int, int]:
    """argparse type of --shard r/n -> (r, n): the architectures i with i % n == r."""
    try:
        rank, world = (int(x) for x in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"shard {text!r}: expected r/n, e.g. 0/2") from None
    if not 0 <= rank < world:
        raise argparse.ArgumentTypeError(f"shard {text!r}: need 0 <= r < n in r/n")
    return rank, world
