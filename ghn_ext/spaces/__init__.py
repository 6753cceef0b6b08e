"""Search spaces, one module and one registered spec each (:mod:`ghn_ext.spaces.spec`): the paper's
classification space, NAS-Bench-201 and the anytime space.

    from ghn_ext.spaces import get_space
    nb201 = get_space("nb201")
    graph = nb201.parse_cell("|nor_conv_3x3~0|+|...|")      # the space's text format
    sampler = nb201.sampler(channels=16, cells_per_stage=1)  # random architectures
"""
from __future__ import annotations

import random
from typing import Optional

from ghn_ext.core.graph import ArchGraph
from ghn_ext.spaces import classification, nb201, anytime  # each registers its spec, in this order
from ghn_ext.spaces.spec import Sampler, SearchSpace, get_space, register_space, space_names

SPACES = space_names()


def make_sampler(space: str, num_nodes: Optional[int] = None, num_blocks: Optional[int] = None,
                 channels: Optional[int] = None, cells_per_stage: Optional[int] = None, random_nodes: bool = False,
                 num_exits: Optional[int] = None, op_weights: Optional[dict[str, float]] = None) -> Sampler:
    """A function drawing one random architecture of `space` from a `random.Random`, at the skeleton
    settings given (the space's defaults for those left at None). `random_nodes` or `op_weights` draw
    training architectures (anytime: random node counts; nb201: edge ops with those relative weights)."""
    return get_space(space).sampler(training=random_nodes or op_weights is not None, op_weights=op_weights,
                                    num_nodes=num_nodes, num_blocks=num_blocks, channels=channels,
                                    cells_per_stage=cells_per_stage, num_exits=num_exits)


def sample_architecture(space: str, rng: random.Random, **kwargs) -> ArchGraph:
    """One random architecture of `space` (keyword arguments as for make_sampler)."""
    return make_sampler(space, **kwargs)(rng)


__all__ = ["SPACES", "Sampler", "SearchSpace", "get_space", "register_space", "make_sampler", "sample_architecture",
           "anytime", "classification", "nb201"]
