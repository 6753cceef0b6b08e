"""Run any architecture graph as a network, on weights supplied from outside or held as parameters.

One forward path (:func:`run_network`) serves both forms: a hypernetwork passes a mapping
``node -> {name: tensor}``; :class:`ArchNetwork` is the same graph as an ``nn.Module`` whose weights are
``nn.Parameter``s (for SGD training and baselines) and which keeps BatchNorm running statistics.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Mapping, Optional, Sequence

import torch
import torch.nn as nn
from torch import Tensor
from torch.utils.flop_counter import FlopCounterMode

from ghn_ext.core.graph import ArchGraph, GraphError
from ghn_ext.core.primitives import PRIMITIVES, batch_norm, concat_bottleneck
from ghn_ext.core.checks import InputError

NodeWeights = Mapping[int, Mapping[str, Tensor]]


@dataclass(frozen=True)
class NodeShape:
    channels: int
    height: int
    width: int


def infer_shapes(graph: ArchGraph, input_size: tuple[int, int, int] = (3, 32, 32)) -> list[NodeShape]:
    """Output shape of every node for one image of `input_size` (C, H, W); GraphError on a mismatch."""
    preds = graph.predecessors()
    shapes: list[Optional[NodeShape]] = [None] * len(graph)
    for v in graph.topological_order():
        node, prim = graph.nodes[v], PRIMITIVES[graph.nodes[v].op]
        ins = [shapes[u] for u in preds[v]]
        if prim.combine == "source":
            if node.channels not in (0, input_size[0]):
                raise GraphError(f"node {v}: input declares {node.channels} channels, data has {input_size[0]}")
            shapes[v] = NodeShape(*input_size)
            continue
        if prim.combine == "concat":
            if len({(s.height, s.width) for s in ins}) != 1:
                raise GraphError(f"node {v} (concat): inputs of different spatial sizes {ins}")
            shapes[v] = NodeShape(sum(s.channels for s in ins), ins[0].height, ins[0].width)
            continue
        if node.scale:
            shapes[v] = _scaled_shape(v, node, ins)
            continue
        if len(set(ins)) != 1:
            raise GraphError(f"node {v} ({node.op}) sums inputs of different shapes: {ins}")
        cin, h, w = ins[0].channels, ins[0].height, ins[0].width
        if prim.combine == "head":
            if node.channels <= 0:
                raise GraphError(f"node {v} (classifier) needs a positive number of classes, got {node.channels}")
            shapes[v] = NodeShape(node.channels, 1, 1)
            continue
        cout = cin if prim.keeps_channels else node.channels
        if prim.keeps_channels and node.channels not in (0, cin):
            raise GraphError(f"node {v} ({node.op}) keeps {cin} channels but declares {node.channels}")
        if cout <= 0:
            raise GraphError(f"node {v} ({node.op}) needs a positive channel count")
        s = node.stride
        shapes[v] = NodeShape(cout, math.ceil(h / s), math.ceil(w / s))
    return shapes  # type: ignore[return-value]


def _scaled_shape(v: int, node, ins: list[NodeShape]) -> NodeShape:
    """Output of a scaled node; its inputs must be square and a power-of-two ratio from its scale."""
    for s in ins:
        big, small = max(s.height, node.scale), min(s.height, node.scale)
        if s.height != s.width or big % small or (big // small) & (big // small - 1):
            raise GraphError(f"node {v} ({node.op}) at scale {node.scale} cannot resample a "
                             f"{s.height}x{s.width} input to its scale")
    if node.channels <= 0:
        raise GraphError(f"node {v} ({node.op}) needs a positive channel count")
    return NodeShape(node.channels, node.scale, node.scale)


def param_shapes(graph: ArchGraph, input_size: tuple[int, int, int] = (3, 32, 32)
                 ) -> dict[int, dict[str, tuple[int, ...]]]:
    """Every free weight of the network, per node (nodes without weights are left out)."""
    shapes = infer_shapes(graph, input_size)
    preds = graph.predecessors()
    out = {}
    for v, node in enumerate(graph.nodes):
        prim = PRIMITIVES[node.op]
        if prim.combine == "source":
            continue
        cin = shapes[preds[v][0]].channels
        if node.scale:  # the bottleneck maps the concatenated inputs to the node's width
            c = shapes[v].channels
            p = {"bottleneck": (c, sum(shapes[u].channels for u in preds[v]), 1, 1), **prim.params(c, c)}
        else:
            p = prim.params(cin, shapes[v].channels)
        if p:
            out[v] = p
    return out


def count_params(graph: ArchGraph, input_size: tuple[int, int, int] = (3, 32, 32)) -> int:
    return sum(math.prod(s) for p in param_shapes(graph, input_size).values() for s in p.values())


def norm_count(graph: ArchGraph) -> dict[int, int]:
    """Number of BatchNorms each node applies: one per input for ops that end in BatchNorm; a scaled
    node has its bottleneck's (position 0) and, when its op ends in BatchNorm, the op's (position 1)."""
    preds = graph.predecessors()
    counts = {}
    for v, n in enumerate(graph.nodes):
        uses_norm = PRIMITIVES[n.op].uses_norm
        if n.scale:
            counts[v] = 1 + uses_norm
        elif uses_norm:
            counts[v] = len(preds[v])
    return counts


def run_network(graph: ArchGraph, x: Tensor, weights: NodeWeights,
                norm_stats: Optional[Mapping[tuple[int, int], tuple[Tensor, Tensor]]] = None,
                training: bool = True,
                path_hook: Optional[Callable[[int, Tensor], Tensor]] = None,
                capture: Optional[dict[int, Optional[Tensor]]] = None,
                order: Optional[Sequence[int]] = None,
                on_node: Optional[Callable[[int], None]] = None,
                check_weights: bool = True) -> Tensor | list[Tensor]:
    """Forward pass of `graph` on images `x` with the given weights.

    BatchNorm uses batch statistics unless `norm_stats` maps (node, input position) to running
    (mean, var) buffers. Returns the logits of the single classifier, or a list of every classifier's
    logits in node order when the graph has several (early exits).

    For final training: `path_hook(v, y)` rewrites each per-input path y of a summing node v before
    the sum (drop-path), and the output of every node that is a key of `capture` is stored there
    (an auxiliary head's input).

    `order` computes only the listed nodes, in that order (every node after its inputs); classifiers
    then come out in that order (an anytime network's exits by cost). `on_node(v)` is called after
    each node is computed (per-node FLOP counts). `check_weights=False` skips the check of the weights'
    shapes (shape inference over the whole graph), for a caller that runs the same weights batch after
    batch and checked them on the first.
    """
    if check_weights:
        _check_weights(graph, tuple(x.shape[1:]), weights)
    # channels-last makes CPU convolutions, pooling and BatchNorm about 2x faster for these small
    # channel counts (measured: a GHN training step 0.72 -> 0.38 s on two cores)
    x = x.contiguous(memory_format=torch.channels_last)
    preds = graph.predecessors()
    order = graph.topological_order() if order is None else _check_order(graph, order, preds)
    acts: dict[int, Tensor] = {}
    run = set(order)
    consumers_left = [sum(s in run for s in succ) for succ in graph.successors()]
    heads = []
    for v in order:
        node, prim = graph.nodes[v], PRIMITIVES[graph.nodes[v].op]
        w = weights.get(v, {})
        if prim.combine == "source":
            out = x
        elif prim.combine == "concat":
            out = torch.cat([acts[u] for u in preds[v]], dim=1)
        elif node.scale:
            stats = [None if norm_stats is None else norm_stats.get((v, k)) for k in (0, 1)]
            y = concat_bottleneck([acts[u] for u in preds[v]], w["bottleneck"], node.scale,
                                  lambda t: batch_norm(t, stats[0], training))
            out = prim.apply(y, w, 1, lambda t: batch_norm(t, stats[1], training))
        else:
            out = None
            for k, u in enumerate(preds[v]):
                running = None if norm_stats is None else norm_stats.get((v, k))
                norm = lambda t, r=running: batch_norm(t, r, training)  # noqa: E731
                y = prim.apply(acts[u], w, node.stride, norm)
                if path_hook is not None:
                    y = path_hook(v, y)
                out = y if out is None else out + y
        if prim.combine == "head":
            heads.append(out)
        acts[v] = out
        if capture is not None and v in capture:
            capture[v] = out
        if on_node is not None:
            on_node(v)
        for u in preds[v]:  # free activations no later node needs
            consumers_left[u] -= 1
            if consumers_left[u] == 0:
                del acts[u]
    return heads[0] if len(heads) == 1 else heads


def _check_order(graph: ArchGraph, order: Sequence[int], preds: list[list[int]]) -> list[int]:
    done: set[int] = set()
    for v in order:
        if not 0 <= v < len(graph) or v in done:
            raise InputError(f"order lists node {v} twice or out of range [0, {len(graph)})")
        missing = [u for u in preds[v] if u not in done]
        if missing:
            raise InputError(f"order computes node {v} before its inputs {missing}")
        done.add(v)
    return list(order)


def _check_weights(graph: ArchGraph, input_size: tuple[int, ...], weights: NodeWeights) -> None:
    """ValueError naming the node and weight when one is missing or has the wrong shape (a wrong
    kernel size or a broadcastable bias would otherwise run silently)."""
    for v, p in param_shapes(graph, input_size).items():  # type: ignore[arg-type]
        got = weights.get(v, {})
        for name, shape in p.items():
            if name not in got:
                raise InputError(f"node {v} ({graph.nodes[v].op}): weight {name!r} of shape {shape} "
                                 "is missing")
            if tuple(got[name].shape) != tuple(shape):
                raise InputError(f"node {v} ({graph.nodes[v].op}) weight {name!r}: got shape "
                                 f"{tuple(got[name].shape)}, network needs {shape}")


def _init_weight(name: str, shape: tuple[int, ...]) -> Tensor:
    if name == "bias":
        return torch.zeros(shape)
    fan_in = math.prod(shape[1:])
    return torch.randn(shape) * math.sqrt(2.0 / fan_in)  # He initialisation (ReLU before convs)


class Network(nn.Module):
    """An architecture run on weights supplied at call time: `Network(arch)(x, weights)`."""

    def __init__(self, graph: ArchGraph, input_size: tuple[int, int, int] = (3, 32, 32)):
        super().__init__()
        self.graph = graph.validate()
        self.input_size = tuple(input_size)

    def forward(self, x: Tensor, weights: NodeWeights) -> Tensor | list[Tensor]:
        return run_network(self.graph, x, weights)


class ArchNetwork(Network):
    """An architecture as an ordinary module: nn.Parameters per node and, unless
    `track_running_stats` is off, BatchNorm running statistics for evaluation."""

    def __init__(self, graph: ArchGraph, input_size: tuple[int, int, int] = (3, 32, 32),
                 weights: Optional[NodeWeights] = None, track_running_stats: bool = True):
        super().__init__(graph, input_size)
        self.track_running_stats = track_running_stats
        shapes = param_shapes(graph, input_size)
        self.params = nn.ParameterDict()
        for v, p in shapes.items():
            for name, shape in p.items():
                init = weights[v][name].detach().clone() if weights is not None else _init_weight(name, shape)
                if tuple(init.shape) != tuple(shape):
                    raise InputError(f"node {v} weight {name!r}: got shape {tuple(init.shape)}, "
                                     f"network needs {shape}")
                self.params[f"{v}_{name}"] = nn.Parameter(init)
        out_shapes = infer_shapes(graph, input_size)
        self._norm_keys = []
        for v, count in (norm_count(graph) if track_running_stats else {}).items():
            for k in range(count):
                c = out_shapes[v].channels
                self.register_buffer(f"bn_{v}_{k}_mean", torch.zeros(c))
                self.register_buffer(f"bn_{v}_{k}_var", torch.ones(c))
                self._norm_keys.append((v, k))

    def node_weights(self) -> dict[int, dict[str, Tensor]]:
        out: dict[int, dict[str, Tensor]] = {}
        for key, p in self.params.items():
            v, name = key.split("_", 1)
            out.setdefault(int(v), {})[name] = p
        return out

    def norm_stats(self) -> dict[tuple[int, int], tuple[Tensor, Tensor]]:
        return {(v, k): (getattr(self, f"bn_{v}_{k}_mean"), getattr(self, f"bn_{v}_{k}_var"))
                for v, k in self._norm_keys}

    def forward(self, x: Tensor, weights: Optional[NodeWeights] = None) -> Tensor | list[Tensor]:
        """With `weights`, runs on them instead of the module's own (BatchNorm on batch statistics)."""
        if weights is not None:
            return run_network(self.graph, x, weights)
        stats = self.norm_stats() if self.track_running_stats else None
        return run_network(self.graph, x, self.node_weights(), stats, self.training)


def count_flops(graph: ArchGraph, input_size: tuple[int, int, int] = (3, 32, 32)) -> int:
    """Floating-point operations of one forward pass on one image, as torch's FlopCounterMode counts them
    (a multiply-add counts as 2; convolutions and the classifier; :func:`node_flops` counts by running
    the network, python_tests check the two agree): every convolution weight W costs 2 |W| per output
    pixel, once per input a summing node applies it to. A formula, because a search describes every
    candidate and a counting pass takes 0.2 s on a NAS-Bench-201 network."""
    shapes, preds = infer_shapes(graph, input_size), graph.predecessors()
    total = 0
    for v, params in param_shapes(graph, input_size).items():
        node, out = graph.nodes[v], shapes[v]
        paths = 1 if node.scale or PRIMITIVES[node.op].combine == "head" else len(preds[v])
        for name, shape in params.items():
            if name == "bias":  # the classifier's bias: an addition FlopCounterMode does not count
                continue
            pixels = out.height * out.width
            if name == "weight_1x7":  # strides along the width first, the 7x1 after it along the height
                pixels = shapes[preds[v][0]].height * out.width
            total += 2 * math.prod(shape) * (pixels if len(shape) == 4 else 1) * paths
    return total


def node_flops(graph: ArchGraph, input_size: tuple[int, int, int] = (3, 32, 32)) -> list[int]:
    """FLOPs of each node on one image, counted as :func:`count_flops` counts them (they sum to it)."""
    weights = {v: {n: torch.zeros(s) for n, s in p.items()}
               for v, p in param_shapes(graph, input_size).items()}
    flops, last = [0] * len(graph), 0

    def record(v: int) -> None:
        nonlocal last
        total = counter.get_total_flops()
        flops[v], last = total - last, total

    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        run_network(graph, torch.zeros((1, *input_size)), weights, on_node=record)
    return flops


def summary(graph: ArchGraph, input_size: tuple[int, int, int] = (3, 32, 32)) -> str:
    """A few lines about an architecture: op counts, parameters, FLOPs."""
    from collections import Counter
    ops = Counter(n.op for n in graph.nodes)
    return "\n".join([
        f"space: {graph.space}   hash: {graph.stable_hash()}   nodes: {len(graph)}   "
        f"edges: {len(graph.edges)}   blocks: {graph.num_blocks}",
        "ops: " + ", ".join(f"{k} x{c}" for k, c in sorted(ops.items())),
        f"params: {count_params(graph, input_size):,}   "
        f"FLOPs@{'x'.join(map(str, input_size))}: {count_flops(graph, input_size) / 1e6:,.1f}M",
    ])
