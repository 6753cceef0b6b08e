"""The NAS-Bench-201 network graph against the benchmark's own network definition (Dong & Yang, ICLR
2020: TinyNetwork with InferCell and ResNetBasicblock), written out below as plain nn.Modules from the
paper's and the benchmark's description: stem conv + BN, three stages of N cells, residual reduction
blocks, final BN + ReLU, global pooling, linear classifier.

Checked layer by layer: the op sequence, every stage's output shape, the parameter count with and
without BatchNorm's affine parameters, and the logits themselves when the reference runs on the very
weights our graph runs on. A freshly initialised GHN's networks must give bounded logits (a loss near
log 10) on every kind of cell, including those whose skip connections chain through all 15 cells.
"""
from __future__ import annotations

import math
import random

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from ghn_ext.models.ghn import GHNConfig, GraphHyperNetwork
from ghn_ext.nets.network import count_params, infer_shapes, run_network
from ghn_ext.spaces import nb201


# ----------------------------------------------------------------------------- the benchmark's network
class ReLUConvBN(nn.Sequential):
    def __init__(self, cin, cout, k, stride, affine):
        super().__init__(nn.ReLU(), nn.Conv2d(cin, cout, k, stride, k // 2, bias=False),
                         nn.BatchNorm2d(cout, affine=affine))


class Zero(nn.Module):
    def forward(self, x):
        return x * 0.0


def make_op(name, c, affine):
    return {"none": lambda: Zero(), "skip_connect": lambda: nn.Identity(),
            "nor_conv_1x1": lambda: ReLUConvBN(c, c, 1, 1, affine),
            "nor_conv_3x3": lambda: ReLUConvBN(c, c, 3, 1, affine),
            "avg_pool_3x3": lambda: nn.AvgPool2d(3, 1, 1, count_include_pad=False)}[name]()


class InferCell(nn.Module):
    """Node j = sum over i < j of op_{j<-i}(node i); the cell's output is node 3."""

    def __init__(self, ops, c, affine):
        super().__init__()
        self.edges = nn.ModuleDict({f"{d}<-{s}": make_op(op, c, affine) for (d, s), op in zip(nb201.EDGES, ops)})

    def forward(self, x):
        nodes = [x]
        for d in (1, 2, 3):
            nodes.append(sum(self.edges[f"{d}<-{s}"](nodes[s]) for s in range(d)))
        return nodes[3]


class ResNetBasicBlock(nn.Module):
    def __init__(self, cin, cout, affine):
        super().__init__()
        self.conv_a = ReLUConvBN(cin, cout, 3, 2, affine)
        self.conv_b = ReLUConvBN(cout, cout, 3, 1, affine)
        self.downsample = nn.Sequential(nn.AvgPool2d(2, 2, 0), nn.Conv2d(cin, cout, 1, bias=False))

    def forward(self, x):
        return self.conv_b(self.conv_a(x)) + self.downsample(x)


class TinyNetwork(nn.Module):
    def __init__(self, ops, c=16, n=5, num_classes=10, affine=True):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, c, 3, padding=1, bias=False), nn.BatchNorm2d(c, affine=affine))
        layers, prev = [], c
        for stage in range(3):
            width = c * 2 ** stage
            if stage:
                layers.append(ResNetBasicBlock(prev, width, affine))
            layers += [InferCell(ops, width, affine) for _ in range(n)]
            prev = width
        self.cells = nn.ModuleList(layers)
        self.lastact = nn.Sequential(nn.BatchNorm2d(prev, affine=affine), nn.ReLU())
        self.classifier = nn.Linear(prev, num_classes)

    def forward(self, x, trace=None):
        x = self.stem(x)
        for cell in self.cells:
            x = cell(x)
            if trace is not None:
                trace.append(tuple(x.shape[1:]))
        x = self.lastact(x)
        return self.classifier(F.adaptive_avg_pool2d(x, 1).flatten(1))


# ----------------------------------------------------------------------------- helpers
CELLS = [
    "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|",
    "|nor_conv_1x1~0|+|skip_connect~0|nor_conv_1x1~1|+|none~0|skip_connect~1|nor_conv_3x3~2|",
    "|skip_connect~0|+|skip_connect~0|skip_connect~1|+|skip_connect~0|skip_connect~1|skip_connect~2|",
    "|avg_pool_3x3~0|+|avg_pool_3x3~0|avg_pool_3x3~1|+|avg_pool_3x3~0|avg_pool_3x3~1|avg_pool_3x3~2|",
    "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|",
]
EXTREME = CELLS[2:]  # all-skip, all-pool, all-none


def bn_affine_params(module: nn.Module) -> int:
    return sum(m.weight.numel() + m.bias.numel() for m in module.modules()
               if isinstance(m, nn.BatchNorm2d) and m.affine)


def copy_weights_into(reference: TinyNetwork, graph, weights) -> None:
    """Put the weights our graph runs on into the reference module, node by node, in graph order: the
    graph lists the same weighted layers in the same order as the module's forward pass."""
    ours = [w for v in sorted(weights) for w in weights[v].values()]
    theirs = [p for name, p in reference.named_parameters()]
    assert [tuple(w.shape) for w in ours] == [tuple(p.shape) for p in theirs]
    with torch.no_grad():
        for p, w in zip(theirs, ours):
            p.copy_(w)


def random_weights(graph, seed):
    from ghn_ext.nets.network import param_shapes
    gen = torch.Generator().manual_seed(seed)
    return {v: {n: torch.randn(s, generator=gen) * (0.5 if n != "bias" else 0.1) for n, s in p.items()}
            for v, p in param_shapes(graph).items()}


# ----------------------------------------------------------------------------- the checks
@pytest.mark.parametrize("arch", CELLS)
def test_parameter_count_matches_the_benchmark(arch):
    ops = nb201.parse(arch)
    graph = nb201.network(arch)
    with_affine, without = TinyNetwork(ops), TinyNetwork(ops, affine=False)
    total = sum(p.numel() for p in with_affine.parameters())
    assert count_params(graph) == sum(p.numel() for p in without.parameters())
    assert count_params(graph) + bn_affine_params(with_affine) == total


def test_parameter_count_of_a_known_cell():
    """The benchmark's largest network, the all-3x3 cell, has 1.53 M parameters: 1,531,546 by the
    formula below (7,264 of them BatchNorm affine parameters, which our networks do not have)."""
    c, n = 16, 5
    ops = ("nor_conv_3x3",) * 6
    per_cell = lambda w: 6 * (9 * w * w + 2 * w)  # six 3x3 convs, each with a BatchNorm
    reduction = lambda a, b: 9 * a * b + 2 * b + 9 * b * b + 2 * b + a * b
    expected = (27 * c + 2 * c + n * (per_cell(c) + per_cell(2 * c) + per_cell(4 * c))
                + reduction(c, 2 * c) + reduction(2 * c, 4 * c) + 2 * 4 * c + 4 * c * 10 + 10)
    assert sum(p.numel() for p in TinyNetwork(ops).parameters()) == expected
    assert expected == 1_531_546
    assert count_params(nb201.network(ops)) + bn_affine_params(TinyNetwork(ops)) == expected


def test_op_order_matches_the_benchmark():
    """Our graph's nodes, in the order they are built (a topological order), spell the module's forward
    pass: stem, then per stage its reduction block and N cells (each node's incoming edge ops, then
    their sum), then BN + ReLU and the classifier."""
    ops = nb201.parse(CELLS[1])
    graph = nb201.network(ops, cells_per_stage=2)
    cell = []
    for d in (1, 2, 3):
        cell += [nb201.TO_PRIMITIVE[op] for (dd, _), op in zip(nb201.EDGES, ops) if dd == d] + ["sum"]
    reduction = ["conv3x3", "conv3x3", "pool_conv1x1", "sum"]
    expected = ["input", "stem_conv"] + 2 * cell + reduction + 2 * cell + reduction + 2 * cell + [
        "norm_relu", "classifier"]
    assert [n.op for n in graph.nodes] == expected
    assert all(u < v for u, v in graph.edges)
    strided = [n.name for n in graph.nodes if n.stride == 2]
    assert strided == ["reduce_a", "shortcut"] * 2


@pytest.mark.parametrize("arch", CELLS)
def test_stage_shapes_match_the_benchmark(arch):
    graph = nb201.network(arch)
    trace = []
    TinyNetwork(nb201.parse(arch))(torch.zeros(2, 3, 32, 32), trace)
    shapes = infer_shapes(graph)
    ends = [v for v, n in enumerate(graph.nodes) if n.name in ("node3", "reduce_out")]
    assert [(shapes[v].channels, shapes[v].height, shapes[v].width) for v in ends] == trace
    last = [v for v, n in enumerate(graph.nodes) if n.op == "norm_relu"]
    assert len(last) == 1 and (shapes[last[0]].channels, shapes[last[0]].height) == (64, 8)


@pytest.mark.parametrize("arch", CELLS)
def test_logits_equal_the_benchmark_network_on_the_same_weights(arch):
    """BatchNorm on batch statistics without affine parameters on both sides: the same numbers."""
    graph = nb201.network(arch, channels=8, cells_per_stage=2)
    weights = random_weights(graph, seed=1)
    reference = TinyNetwork(nb201.parse(arch), c=8, n=2, affine=False).train()
    copy_weights_into(reference, graph, weights)
    x = torch.randn(6, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(run_network(graph, x, weights), reference(x), rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_fresh_ghn_gives_bounded_logits_on_every_kind_of_cell():
    """Over 200 cells (the all-skip, all-pool and all-none ones among them), a freshly initialised GHN's
    networks give finite logits of bounded scale and a cross-entropy near log(10): nothing explodes
    along a chain of skip connections through the 15 cells."""
    torch.manual_seed(0)
    ghn = GraphHyperNetwork(GHNConfig(space="nb201"))
    rng = random.Random(0)
    cells = EXTREME + [nb201.to_string(nb201.sample_ops(rng)) for _ in range(197)]
    gen = torch.Generator().manual_seed(3)
    x, y = torch.randn(16, 3, 32, 32, generator=gen), torch.randint(0, 10, (16,), generator=gen)
    losses, scales = [], []
    with torch.no_grad():
        for i in range(0, len(cells), 25):
            graphs = [nb201.network(c, channels=8) for c in cells[i:i + 25]]
            for g, w in zip(graphs, ghn(graphs)):
                logits = run_network(g, x, w)
                assert torch.isfinite(logits).all(), nb201.arch_string(g)
                scales.append(float(logits.abs().max()))
                losses.append(float(F.cross_entropy(logits, y)))
    assert max(scales) < 10.0
    assert all(abs(l - math.log(10)) < 1.0 for l in losses), (min(losses), max(losses))
    assert abs(sum(losses) / len(losses) - math.log(10)) < 0.5
