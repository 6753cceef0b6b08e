"""Search spaces: the paper's classification space and NAS-Bench-201."""
from __future__ import annotations

import random
from typing import Callable

from ..graph import ArchGraph
from . import classification, nb201

SPACES = ("classification", "nb201")
Sampler = Callable[[random.Random], ArchGraph]


def make_sampler(space: str, num_nodes: int = classification.TRAIN_NODES, num_blocks: int = 18,
                 channels: int | None = None, cells_per_stage: int = 5) -> Sampler:
    """A function drawing one random architecture of `space` from a `random.Random`.

    classification: cells of `num_nodes` nodes stacked `num_blocks` times, `channels` (32) initially;
    nb201: random cells in the skeleton with `channels` (16) and `cells_per_stage` (5).
    """
    if space == "classification":
        c = channels or 32
        return lambda rng: classification.sample_architecture(rng, num_nodes, num_blocks, c)
    if space == "nb201":
        c = channels or 16
        return lambda rng: nb201.network(nb201.sample_ops(rng), c, cells_per_stage)
    raise ValueError(f"unknown search space {space!r}; choose one of {', '.join(SPACES)}")


def sample_architecture(space: str, rng: random.Random, **kwargs) -> ArchGraph:
    """One random architecture of `space` (keyword arguments as for make_sampler)."""
    return make_sampler(space, **kwargs)(rng)


__all__ = ["SPACES", "Sampler", "make_sampler", "sample_architecture", "classification", "nb201"]
