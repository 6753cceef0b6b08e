"""The anytime-prediction search space (paper Sec. 5.2, appendix 7.1).

A network is a stem (3x3 conv at 32x32) and three blocks of 24, 16 and 8 nodes. Every node applies
one op of :data:`OPS` at its own scale: block 1 nodes work at 32, 16 or 8 pixels, block 2 at 16 or 8,
block 3 at 8. A node resamples its inputs to its scale, concatenates them and applies a 1x1
bottleneck before its op (``primitives.concat_bottleneck``), so there is no identity op. Widths grow
as the resolution falls, like MSDNet's: a node at scale s has ``channels * 32 // s`` channels.

A node reads one to :data:`MAX_INPUTS` distinct nodes among the earlier nodes of its block and the
nodes of the previous block (the stem for block 1). A fixed number of nodes carry an early-exit
classifier (a ``classifier`` node right after them, in their block); the network's last node always
does. A node whose output nobody reads and that has no exit becomes an extra input of a random later
node that may read it, so no computation is wasted.
"""
from __future__ import annotations

import random
from typing import Sequence

from ghn_ext.core.graph import ArchGraph, GraphError, Node
from ghn_ext.core.checks import InputError
from ghn_ext.spaces.spec import SearchSpace, register_space

OPS: tuple[str, ...] = ("conv1x1", "conv3x3", "conv5x5", "max_pool3x3", "avg_pool3x3")
BLOCK_NODES: tuple[int, ...] = (24, 16, 8)
BLOCK_SCALES: tuple[tuple[int, ...], ...] = ((32, 16, 8), (16, 8), (8,))
NUM_EXITS = 6
MAX_INPUTS = 3
CHANNELS = 16      # width at 32x32
NUM_CLASSES = 10


def width(channels: int, scale: int) -> int:
    """Channels of a node at `scale` (pixels) in a network of base width `channels`."""
    return channels * (32 // scale)


def sample_architecture(rng: random.Random, block_nodes: Sequence[int] = BLOCK_NODES,
                        num_exits: int = NUM_EXITS, channels: int = CHANNELS, random_nodes: bool = False,
                        num_classes: int = NUM_CLASSES) -> ArchGraph:
    """A random anytime network. With `random_nodes` (GHN training, appendix 7.2) block b has a
    uniformly random number of nodes in [1, block_nodes[b]]; then the exits are at most the nodes."""
    if len(block_nodes) != len(BLOCK_SCALES) or min(block_nodes) < 1:
        raise InputError(f"block_nodes must give {len(BLOCK_SCALES)} positive node counts, got {block_nodes}")
    if channels < 1 or num_exits < 1:
        raise InputError(f"channels and num_exits must be positive, got {channels} and {num_exits}")
    counts = [rng.randint(1, n) for n in block_nodes] if random_nodes else list(block_nodes)
    total = sum(counts)
    if num_exits > total and not random_nodes:
        raise InputError(f"{num_exits} exits need at least as many nodes, the blocks have {total}")

    # Ops, scales and inputs per node; ids count the stem as 0 and the block nodes from 1.
    ops, scales, blocks, inputs = [], [], [], []
    prev_block, start = [0], 1
    for b, n in enumerate(counts):
        for j in range(n):
            candidates = prev_block + list(range(start, start + j))
            k = rng.randint(1, min(MAX_INPUTS, len(candidates)))
            ops.append(rng.choice(OPS))
            scales.append(rng.choice(BLOCK_SCALES[b]))
            blocks.append(b + 1)
            inputs.append(set(rng.sample(candidates, k)))
        prev_block, start = list(range(start, start + n)), start + n
    last = total  # id of the network's last node
    exits = {last} | set(rng.sample(range(1, last), min(num_exits, total) - 1))
    # A node nobody reads without an exit feeds a random later reader: later nodes of its block, or the
    # next block's nodes.
    block_start = [1] + [1 + sum(counts[:b]) for b in range(1, len(counts) + 1)]
    for u in range(1, last + 1):
        if u in exits or any(u in ins for ins in inputs):
            continue
        b = blocks[u - 1]
        readers = range(u + 1, block_start[min(b + 1, len(counts))])
        inputs[rng.choice(readers) - 1].add(u)
    return network(ops, scales, [sorted(i) for i in inputs], counts, sorted(exits), channels,
                   num_classes)


def network(ops: Sequence[str], scales: Sequence[int], inputs: Sequence[Sequence[int]],
            counts: Sequence[int], exits: Sequence[int], channels: int = CHANNELS,
            num_classes: int = NUM_CLASSES) -> ArchGraph:
    """The graph of an anytime genotype: node i (1-based, 0 is the stem) applies ops[i-1] at
    scales[i-1] to inputs[i-1]; blocks hold counts[b] consecutive nodes; exits lists the nodes that
    carry a classifier."""
    if not (len(ops) == len(scales) == len(inputs) == sum(counts)):
        raise GraphError(f"{sum(counts)} block nodes need as many ops, scales and input lists; got "
                         f"{len(ops)}, {len(scales)}, {len(inputs)}")
    nodes = [Node("input", 0, 3), Node("stem_conv", 0, channels)]
    edges, index = [(0, 1)], {0: 1}  # genotype id -> graph node
    block_of = [b + 1 for b, n in enumerate(counts) for _ in range(n)]
    for i, (op, scale, ins) in enumerate(zip(ops, scales, inputs), start=1):
        block = block_of[i - 1]
        if op not in OPS:
            raise GraphError(f"node {i}: unknown op {op!r}; known: {', '.join(OPS)}")
        if scale not in BLOCK_SCALES[block - 1]:
            raise GraphError(f"node {i} in block {block}: scale {scale} not in {BLOCK_SCALES[block - 1]}")
        if not ins or any(not 0 <= u < i for u in ins):
            raise GraphError(f"node {i}: inputs {list(ins)} must be earlier nodes")
        nodes.append(Node(op, block, width(channels, scale), scale=scale, exit=i in exits))
        index[i] = len(nodes) - 1
        edges += [(index[u], index[i]) for u in ins]
        if i in exits:
            nodes.append(Node("classifier", block, num_classes))
            edges.append((index[i], len(nodes) - 1))
    meta = {"ops": list(ops), "scales": list(scales), "inputs": [list(i) for i in inputs],
            "counts": list(counts), "exits": sorted(exits), "channels": channels}
    return ArchGraph(nodes, edges, "anytime", meta).validate()


def with_channels(graph: ArchGraph, channels: int) -> ArchGraph:
    """The same anytime architecture at another base width (the final network's FLOPs match)."""
    m = graph.meta
    try:
        return network(m["ops"], m["scales"], m["inputs"], m["counts"], m["exits"], channels,
                       graph.nodes[-1].channels)
    except KeyError as exc:
        raise GraphError(f"not an anytime genotype graph: meta lacks {exc}") from exc


class AnytimeSpace(SearchSpace):
    name = "anytime"
    summary = "anytime-prediction networks with early exits (paper Sec. 5.2), ranked by their accuracy-FLOPs curve"
    text_format = "architecture-graph JSON (ArchGraph.to_dict)"
    skeleton_defaults = {"channels": CHANNELS, "num_exits": NUM_EXITS}
    ghn_defaults = {"edge_bottlenecks": True}
    anytime = True

    def sampler(self, training=False, op_weights=None, **skeleton):
        """Training networks have random node counts per block (appendix 7.2); candidates are full size."""
        self.check_op_weights(op_weights)
        s = self.skeleton(**skeleton)
        return lambda rng: sample_architecture(rng, num_exits=s["num_exits"], channels=s["channels"],
                                               random_nodes=training)


SPACE = register_space(AnytimeSpace())
