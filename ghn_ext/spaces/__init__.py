"""Search spaces: the paper's classification space and NAS-Bench-201."""
from __future__ import annotations

import random

from ..graph import ArchGraph
from . import classification, nb201

SPACES = ("classification", "nb201")


def sample_architecture(space: str, rng: random.Random, **kwargs) -> ArchGraph:
    """One random architecture of `space` (keyword arguments go to that space's sampler)."""
    if space == "classification":
        return classification.sample_architecture(rng, **kwargs)
    if space == "nb201":
        return nb201.sample_architecture(rng, **kwargs)
    raise ValueError(f"unknown search space {space!r}; choose one of {', '.join(SPACES)}")


__all__ = ["SPACES", "sample_architecture", "classification", "nb201"]
