"""Search spaces: the paper's classification space, NAS-Bench-201 and the anytime space."""
from __future__ import annotations

import random
from typing import Callable

from ghn_ext.core.graph import ArchGraph
from ghn_ext.spaces import anytime, classification, nb201
from ghn_ext.core.checks import InputError

SPACES = ("classification", "nb201", "anytime")
Sampler = Callable[[random.Random], ArchGraph]


def make_sampler(space: str, num_nodes: int = classification.TRAIN_NODES, num_blocks: int = 18,
                 channels: int | None = None, cells_per_stage: int = 5, random_nodes: bool = False,
                 num_exits: int = anytime.NUM_EXITS, op_weights: dict[str, float] | None = None) -> Sampler:
    """A function drawing one random architecture of `space` from a `random.Random`.

    classification: cells of `num_nodes` nodes stacked `num_blocks` times, `channels` (32) initially;
    nb201: random cells in the skeleton with `channels` (16) and `cells_per_stage` (5), their edge ops
    uniform or drawn with the relative `op_weights` (nb201 only);
    anytime: networks of 24/16/8 nodes (random counts up to those with `random_nodes`, for GHN
    training), `num_exits` exits, base width `channels` (16).
    """
    if op_weights is not None and space != "nb201":
        raise InputError(f"op weights apply to the nb201 space only, not {space!r}")
    if space == "classification":
        c = channels or 32
        return lambda rng: classification.sample_architecture(rng, num_nodes, num_blocks, c)
    if space == "nb201":
        c = channels or 16
        if op_weights is not None:
            op_weights = nb201.check_op_weights(op_weights)
        return lambda rng: nb201.network(nb201.sample_ops(rng, op_weights), c, cells_per_stage)
    if space == "anytime":
        c = channels or anytime.CHANNELS
        return lambda rng: anytime.sample_architecture(rng, num_exits=num_exits, channels=c,
                                                       random_nodes=random_nodes)
    raise InputError(f"unknown search space {space!r}; choose one of {', '.join(SPACES)}")


def sample_architecture(space: str, rng: random.Random, **kwargs) -> ArchGraph:
    """One random architecture of `space` (keyword arguments as for make_sampler)."""
    return make_sampler(space, **kwargs)(rng)


__all__ = ["SPACES", "Sampler", "make_sampler", "sample_architecture", "anytime", "classification", "nb201"]
