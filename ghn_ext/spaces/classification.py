"""The paper's image-classification search space (appendix 7.1) and its macro networks.

A cell (block) has two input nodes, 1x1 bottlenecks fed by the outputs of blocks i-1 and i-2 (with the
stride that brings them to the block's resolution), N intermediate nodes that each apply one op to each
of their inputs and sum (Eq. 7), and an output node that concatenates the leaves (intermediate nodes
no other node reads). The same cell is stacked B times between a stem and a classifier.
"""
from __future__ import annotations

import json
import random
from dataclasses import dataclass
from typing import Any, Sequence

from ghn_ext.core.graph import ArchGraph, GraphError, Node
from ghn_ext.core.checks import InputError
from ghn_ext.spaces.spec import SearchSpace, register_space

OPS: tuple[str, ...] = ("identity", "conv1x1", "sep_conv3x3", "sep_conv5x5", "dil_sep_conv3x3",
                        "dil_sep_conv5x5", "conv1x7_7x1", "max_pool3x3", "avg_pool3x3")
TRAIN_NODES = 7    # nodes per cell while training the GHN (paper Sec. 5.1.1)
EVAL_NODES = 17    # nodes per cell of the searched architectures


@dataclass(frozen=True)
class Cell:
    """A cell's genotype: node j applies ops[j] to inputs[j]; input 0/1 are the two bottlenecks,
    input 2 + k is intermediate node k."""
    ops: tuple[str, ...]
    inputs: tuple[tuple[int, ...], ...]

    def __post_init__(self):
        if len(self.ops) != len(self.inputs) or not self.ops:
            raise GraphError("a cell needs one input list per op and at least one node")
        for j, (op, ins) in enumerate(zip(self.ops, self.inputs)):
            if op not in OPS:
                raise GraphError(f"cell node {j}: unknown op {op!r}; known: {', '.join(OPS)}")
            if not ins or any(not 0 <= i < j + 2 for i in ins) or len(set(ins)) != len(ins):
                raise GraphError(f"cell node {j}: inputs {list(ins)} must be distinct and in [0, {j + 2})")
        used = {i for ins in self.inputs for i in ins}
        if not {0, 1} <= used:
            raise GraphError("both cell inputs must be read by some node")

    @property
    def leaves(self) -> list[int]:
        used = {i for ins in self.inputs for i in ins}
        return [j for j in range(len(self.ops)) if j + 2 not in used]

    def to_dict(self) -> dict[str, Any]:
        return {"ops": list(self.ops), "inputs": [list(i) for i in self.inputs]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Cell":
        try:
            return cls(tuple(d["ops"]), tuple(tuple(int(i) for i in ins) for ins in d["inputs"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise GraphError(f"malformed cell {d!r}: {exc}") from exc


def sample_cell(rng: random.Random, num_nodes: int = TRAIN_NODES) -> Cell:
    """A random cell: each node draws an op and one or two distinct earlier nodes as inputs;
    an input node nobody read is then added to a random node, so both bottlenecks are used."""
    ops, inputs = [], []
    for j in range(num_nodes):
        ops.append(rng.choice(OPS))
        inputs.append(sorted(rng.sample(range(j + 2), rng.choice((1, 2)))))
    for src in (0, 1):
        if not any(src in ins for ins in inputs):
            j = rng.randrange(num_nodes)
            inputs[j] = sorted(set(inputs[j]) | {src})
    return Cell(tuple(ops), tuple(tuple(i) for i in inputs))


def _macro_graph(cell: Cell, channels: Sequence[int], reductions: Sequence[int], stem_stride: int,
                 num_classes: int, space_meta: dict[str, Any]) -> ArchGraph:
    nodes = [Node("input", block=0, channels=3), Node("stem_conv", 0, channels[0], stride=stem_stride)]
    edges: list[tuple[int, int]] = [(0, 1)]
    outputs, levels = [1, 1], [0, 0]  # (node, resolution level) of blocks i-2 and i-1, stem for both
    level = 0
    for b, c in enumerate(channels):
        level += b in reductions
        block = b + 1
        base = len(nodes)
        for src, src_level in ((outputs[-1], levels[-1]), (outputs[-2], levels[-2])):
            nodes.append(Node("bottleneck", block, c, stride=2 ** (level - src_level)))
            edges.append((src, len(nodes) - 1))
        for op, ins in zip(cell.ops, cell.inputs):
            nodes.append(Node(op, block, c))
            edges += [(base + i, len(nodes) - 1) for i in ins]
        nodes.append(Node("concat", block, c * len(cell.leaves)))
        edges += [(base + 2 + j, len(nodes) - 1) for j in cell.leaves]
        outputs.append(len(nodes) - 1)
        levels.append(level)
    nodes.append(Node("classifier", len(channels) + 1, num_classes))
    edges.append((outputs[-1], len(nodes) - 1))
    meta = {"cell": cell.to_dict(), **space_meta}
    return ArchGraph(nodes, edges, "classification", meta).validate()


def _widths(num_blocks: int, channels: int, reductions) -> list[int]:
    """Each cell's output channels: `channels`, doubled at every reducing cell."""
    widths, c = [], channels
    for b in range(num_blocks):
        c *= 2 if b in reductions else 1
        widths.append(c)
    return widths


def cifar_network(cell: Cell, num_blocks: int = 18, channels: int = 32, num_classes: int = 10) -> ArchGraph:
    """CIFAR macro network: stem, `num_blocks` cells; after 1/3 and 2/3 of them the spatial size halves
    and the channels double (the first cell of each later stage reduces), global pool, classifier."""
    if num_blocks < 1 or channels < 1:
        raise GraphError("num_blocks and channels must be positive")
    reductions = sorted({num_blocks // 3, 2 * num_blocks // 3} - {0})
    return _macro_graph(cell, _widths(num_blocks, channels, reductions), reductions, 1, num_classes,
                        {"macro": "cifar", "num_blocks": num_blocks, "channels": channels})


IMAGENET_MOBILE_REDUCTIONS = (1, 2, 6, 10)


def imagenet_mobile_network(cell: Cell, channels: int, num_blocks: int = 14,
                            num_classes: int = 1000) -> ArchGraph:
    """ImageNet-mobile network: stride-2 stem conv, 14 cells reducing (and doubling channels) at
    cells 1, 2, 6 and 10, global pool, classifier. Meant for 224x224 inputs."""
    widths = _widths(num_blocks, channels, IMAGENET_MOBILE_REDUCTIONS)
    return _macro_graph(cell, widths, IMAGENET_MOBILE_REDUCTIONS, 2, num_classes,
                        {"macro": "imagenet_mobile", "num_blocks": num_blocks, "channels": channels})


def widest_mobile_channels(cell: Cell, max_mult_adds: float = 600e6, image_size: int = 224) -> int:
    """Largest initial channel count whose ImageNet-mobile network stays under `max_mult_adds`
    multiply-adds (the mobile-setting convention; FlopCounterMode counts 2 FLOPs per multiply-add)."""
    from ghn_ext.nets.network import count_flops

    def mult_adds(c: int) -> float:
        return count_flops(imagenet_mobile_network(cell, c), (3, image_size, image_size)) / 2

    if mult_adds(1) > max_mult_adds:
        raise InputError(f"even 1 channel exceeds {max_mult_adds:.3g} multiply-adds")
    lo, hi = 1, 2
    while mult_adds(hi) <= max_mult_adds:
        lo, hi = hi, hi * 2
    while hi - lo > 1:  # multiply-adds grow monotonically with the width
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if mult_adds(mid) <= max_mult_adds else (lo, mid)
    return lo


def sample_architecture(rng: random.Random, num_nodes: int = TRAIN_NODES, num_blocks: int = 18,
                        channels: int = 32) -> ArchGraph:
    return cifar_network(sample_cell(rng, num_nodes), num_blocks, channels)


class ClassificationSpace(SearchSpace):
    name = "classification"
    summary = "the paper's image-classification cells (appendix 7.1) in an 18-cell CIFAR network"
    text_format = 'a cell as JSON: {"ops": ["sep_conv3x3", ...], "inputs": [[0, 1], ...]}'
    skeleton_defaults = {"num_nodes": EVAL_NODES, "num_blocks": 18, "channels": 32}
    train_defaults = {"num_nodes": TRAIN_NODES}  # a GHN trained on 7-node cells ranks 17-node ones (Sec. 5.1.1)
    cell_nodes = True
    demo_skeleton = {"num_blocks": 4, "channels": 16}

    def sampler(self, training=False, op_weights=None, **skeleton):
        self.check_op_weights(op_weights)
        s = self.skeleton(**skeleton)
        return lambda rng: sample_architecture(rng, s["num_nodes"], s["num_blocks"], s["channels"])

    def validation_sampler(self, **skeleton):
        """Unseen architectures a GHN is validated on while it trains: cells of the search's size."""
        return self.sampler(**{**skeleton, "num_nodes": EVAL_NODES})

    def parse_cell(self, text, **skeleton):
        try:
            d = json.loads(text)
        except json.JSONDecodeError as exc:
            raise GraphError(f"not valid JSON ({exc})") from None
        return self.from_description(d, **skeleton)

    def describe(self, graph):
        return graph.meta.get("cell")

    def from_description(self, description, **skeleton):
        if not isinstance(description, dict):
            raise GraphError(f"expected a JSON object (a cell or an architecture graph), got {type(description).__name__}")
        s = self.skeleton(**skeleton)
        return cifar_network(Cell.from_dict(description), s["num_blocks"], s["channels"])

    def spanning_architectures(self, **skeleton):
        """Every node reads both cell inputs, so all nodes are leaves and the concatenations (hence the next
        bottlenecks) are the widest."""
        s = self.skeleton(**skeleton)
        n = s["num_nodes"]
        return [cifar_network(Cell((op,) * n, ((0, 1),) * n), s["num_blocks"], s["channels"]) for op in OPS]


SPACE = register_space(ClassificationSpace())
