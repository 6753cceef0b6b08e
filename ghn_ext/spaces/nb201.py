"""The NAS-Bench-201 search space (Dong & Yang, ICLR 2020), a second space with public ground truth.

A cell has 4 feature nodes; each of the 6 edges j <- i (i < j) carries one op. In the computation
graph every edge op becomes a node (reading feature node i) and each feature node j > 0 is a `sum` of
its incoming op nodes, so a cell is a block of 3 + 6 nodes plus its entry node. `none` edges stay as
`zero` nodes, which keeps all 15,625 cells (even those whose output is constant) valid graphs that
print back to their original string.

Skeleton: 3x3 stem conv with 16 channels, three stages of 5 cells at 16/32/64 channels, a residual
reduction block between stages (ReLU-conv3x3/2-BN, ReLU-conv3x3-BN, shortcut 2x2 avg pool + 1x1 conv,
summed), BatchNorm + ReLU, global pool, classifier: the benchmark's TinyNetwork layer for layer, except
that BatchNorm has no affine parameters (every free weight is generated; python_tests/test_nb201_skeleton.py
checks the correspondence).
"""
from __future__ import annotations

import itertools
import math
import re

from ghn_ext.core.graph import ArchGraph, GraphError, Node
from ghn_ext.spaces.spec import SearchSpace, register_space

OPS: tuple[str, ...] = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
TO_PRIMITIVE = {"none": "zero", "skip_connect": "identity", "nor_conv_1x1": "conv1x1",
                "nor_conv_3x3": "conv3x3", "avg_pool_3x3": "avg_pool3x3"}
FROM_PRIMITIVE = {v: k for k, v in TO_PRIMITIVE.items()}
EDGES: tuple[tuple[int, int], ...] = ((1, 0), (2, 0), (2, 1), (3, 0), (3, 1), (3, 2))  # (to, from)
NUM_ARCHS = len(OPS) ** len(EDGES)  # 15,625

_TOKEN = re.compile(r"([a-z_0-9]+)~([0-9]+)")  # used with fullmatch: no trailing newline


def parse(arch: str) -> tuple[str, ...]:
    """'|op~0|+|op~0|op~1|+|op~0|op~1|op~2|' -> the 6 edge ops in EDGES order."""
    if not isinstance(arch, str):
        raise GraphError(f"NAS-Bench-201 architecture must be a string, got {type(arch).__name__}")
    stages = arch.strip().split("+")
    if len(stages) != 3:
        raise GraphError(f"not a NAS-Bench-201 string (expected 3 '+'-separated nodes): {arch!r}")
    ops = []
    for node, stage in enumerate(stages, start=1):
        if not (stage.startswith("|") and stage.endswith("|")):
            raise GraphError(f"node {node} of {arch!r} must be enclosed in '|'")
        tokens = stage[1:-1].split("|")
        if len(tokens) != node:
            raise GraphError(f"node {node} of {arch!r} needs {node} incoming edges, has {len(tokens)}")
        for src, tok in enumerate(tokens):
            m = _TOKEN.fullmatch(tok)
            if not m or int(m.group(2)) != src:
                raise GraphError(f"bad edge {tok!r} in {arch!r}: expected 'op~{src}'")
            if m.group(1) not in OPS:
                raise GraphError(f"unknown op {m.group(1)!r} in {arch!r}; known: {', '.join(OPS)}")
            ops.append(m.group(1))
    return tuple(ops)


def to_string(ops: tuple[str, ...]) -> str:
    if len(ops) != len(EDGES) or any(op not in OPS for op in ops):
        raise GraphError(f"a NAS-Bench-201 cell has 6 edge ops from {OPS}, got {ops}")
    nodes: dict[int, list[str]] = {}
    for (dst, src), op in zip(EDGES, ops):
        nodes.setdefault(dst, []).append(f"{op}~{src}")
    return "+".join("|" + "|".join(nodes[d]) + "|" for d in (1, 2, 3))


def all_architectures() -> list[str]:
    """All 15,625 cells in a stable order: itertools.product over OPS (in the order above) for the
    edges in EDGES order, the last edge varying fastest."""
    return [to_string(ops) for ops in itertools.product(OPS, repeat=len(EDGES))]


def _add_cell(nodes: list[Node], edges: list[tuple[int, int]], entry: int, block: int, c: int,
              ops: tuple[str, ...]) -> int:
    feature = {0: entry}
    for dst in (1, 2, 3):
        op_nodes = []
        for (d, src), op in zip(EDGES, ops):
            if d == dst:
                nodes.append(Node(TO_PRIMITIVE[op], block, c, name=f"{d}<-{src}"))
                edges.append((feature[src], len(nodes) - 1))
                op_nodes.append(len(nodes) - 1)
        nodes.append(Node("sum", block, c, name=f"node{dst}"))
        edges += [(u, len(nodes) - 1) for u in op_nodes]
        feature[dst] = len(nodes) - 1
    return feature[3]


def _add_reduction(nodes: list[Node], edges: list[tuple[int, int]], entry: int, block: int, c: int) -> int:
    base = len(nodes)
    nodes += [Node("conv3x3", block, c, stride=2, name="reduce_a"), Node("conv3x3", block, c, name="reduce_b"),
              Node("pool_conv1x1", block, c, stride=2, name="shortcut"), Node("sum", block, c, name="reduce_out")]
    edges += [(entry, base), (base, base + 1), (entry, base + 2), (base + 1, base + 3), (base + 2, base + 3)]
    return base + 3


def network(arch: str | tuple[str, ...], channels: int = 16, cells_per_stage: int = 5,
            num_classes: int = 10) -> ArchGraph:
    """The full NAS-Bench-201 network of a cell given as its string (or its 6 edge ops)."""
    ops = parse(arch) if isinstance(arch, str) else tuple(arch)
    arch_str = to_string(ops)
    nodes = [Node("input", 0, 3), Node("stem_conv", 0, channels)]
    edges = [(0, 1)]
    out, block = 1, 0
    for stage in range(3):
        c = channels * 2 ** stage
        if stage:
            block += 1
            out = _add_reduction(nodes, edges, out, block, c)
        for _ in range(cells_per_stage):
            block += 1
            out = _add_cell(nodes, edges, out, block, c, ops)
    nodes.append(Node("norm_relu", block + 1, c, name="lastact"))
    nodes.append(Node("classifier", block + 1, num_classes))
    edges += [(out, len(nodes) - 2), (len(nodes) - 2, len(nodes) - 1)]
    meta = {"arch": arch_str, "channels": channels, "cells_per_stage": cells_per_stage}
    return ArchGraph(nodes, edges, "nb201", meta).validate()


def cell_ops(graph: ArchGraph) -> tuple[str, ...]:
    """Read the 6 edge ops back from a NAS-Bench-201 network graph (from its first cell's nodes)."""
    if graph.space != "nb201":
        raise GraphError(f"not a NAS-Bench-201 graph (space {graph.space!r})")
    start, end = graph.block_ranges()[1]
    by_edge = {n.name: n.op for n in graph.nodes[start:end]}
    try:
        return tuple(FROM_PRIMITIVE[by_edge[f"{d}<-{s}"]] for d, s in EDGES)
    except KeyError as exc:
        raise GraphError(f"graph's first cell lacks NAS-Bench-201 edge {exc}") from exc


def arch_string(graph: ArchGraph) -> str:
    return to_string(cell_ops(graph))


def check_op_weights(weights: dict[str, float]) -> dict[str, float]:
    """Relative sampling weights per op (ops left out weigh 0), checked: known ops, finite, non-negative,
    at least one positive."""
    if not isinstance(weights, dict) or not weights:
        raise GraphError(f"op weights must be a non-empty mapping of op to weight, got {weights!r}")
    for op, w in weights.items():
        if op not in OPS:
            raise GraphError(f"unknown op {op!r} in the op weights; known: {', '.join(OPS)}")
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w) or w < 0:
            raise GraphError(f"the weight of {op} must be a finite number >= 0, got {w!r}")
    if not any(weights.values()):
        raise GraphError("at least one op needs a positive weight")
    return {op: float(weights.get(op, 0.0)) for op in OPS}


def sample_ops(rng, op_weights: dict[str, float] | None = None) -> tuple[str, ...]:
    """A random cell, one op per edge: uniform, or each edge drawn independently with `op_weights`."""
    if op_weights is None:
        return tuple(rng.choice(OPS) for _ in EDGES)
    weights = check_op_weights(op_weights)
    return tuple(rng.choices(OPS, weights=[weights[op] for op in OPS], k=len(EDGES)))


def sample_architecture(rng) -> ArchGraph:
    return network(sample_ops(rng))


# Training cells draw each edge's op with the convolutions at 0.35 each and the parameter-free ops at 0.1:
# a GHN trained on uniform cells emits good weights for the cells that need few (skip- and pool-heavy),
# over-ranking them against the convolution-heavy cells full training favours (bench/studies/nb201_ranking).
TRAIN_OP_WEIGHTS = {"nor_conv_3x3": 7, "nor_conv_1x1": 7, "skip_connect": 2, "avg_pool_3x3": 2, "none": 2}


class NB201Space(SearchSpace):
    name = "nb201"
    summary = "NAS-Bench-201 cells (Dong & Yang, ICLR 2020): 6 edges, 5 ops, 15,625 cells"
    text_format = "the benchmark's cell string, e.g. |nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"
    skeleton_defaults = {"channels": 16, "cells_per_stage": 5}  # the benchmark's network
    # A GHN trained on one cell per stage ranks cells (scored in that skeleton) far better per hour than one
    # trained on the benchmark's five, and does not transfer to five (bench/studies/nb201_ranking).
    train_defaults = {"channels": 16, "cells_per_stage": 1, "steps": 20000, "snapshot_every": 3000,
                      "op_weights": TRAIN_OP_WEIGHTS}
    # The largest kernel is 3x3; a 64-channel tile, one for the widest stage's convolutions instead of four,
    # ranks better than 32 at no extra time.
    ghn_defaults = {"kernel": 3, "tile_channels": 64}
    signal = "loss"  # ranks cells clearly better than the accuracy does (bench/RESULTS.md)
    scores_in_training_skeleton = True
    truth_table = True
    demo_skeleton = {"channels": 8, "cells_per_stage": 1}

    def check_op_weights(self, op_weights):
        return None if op_weights is None else check_op_weights(op_weights)

    def sampler(self, training=False, op_weights=None, **skeleton):
        s = self.skeleton(**skeleton)
        weights = self.check_op_weights(op_weights) if training else None
        return lambda rng: network(sample_ops(rng, weights), s["channels"], s["cells_per_stage"])

    def parse_cell(self, text, **skeleton):
        s = self.skeleton(**skeleton)
        return network(text, s["channels"], s["cells_per_stage"])

    def describe(self, graph):
        return arch_string(graph)

    def from_description(self, description, **skeleton):
        return self.parse_cell(description, **skeleton)

    def place(self, graph, **skeleton):
        s = self.skeleton(**skeleton)
        return network(cell_ops(graph), s["channels"], s["cells_per_stage"])

    def counted(self, graph):
        """The benchmark's network, whatever skeleton the graph was built in."""
        return network(cell_ops(graph))

    def spanning_architectures(self, **skeleton):
        s = self.skeleton(**skeleton)
        return [network((op,) * len(EDGES), s["channels"], s["cells_per_stage"]) for op in OPS]


SPACE = register_space(NB201Space())
