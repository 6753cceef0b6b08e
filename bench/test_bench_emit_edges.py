"""emit_edge_weights: compiled CPU kernel against emit_edges_reference on the anytime space's bottlenecks.

Every bottleneck of 8 full-size anytime networks (24/16/8 nodes, base width 16; edge blocks (32, 32, 1, 1)
as the GHN emits them), targets from ghn_ext.models.ghn.EdgePlan, blocks random. Forward, and forward + backward.

Run: OMP_NUM_THREADS=1 python -m pytest bench/test_bench_emit_edges.py --benchmark-columns=mean,stddev,rounds
"""
from __future__ import annotations

import functools
import random

import pytest
import torch

from ghn_ext.models.ghn import EdgePlan
from ghn_ext.ops.emit import emit_edge_weights, emit_edges_reference
from ghn_ext.spaces import anytime

BLOCK_CHANNELS = 32


@functools.lru_cache(maxsize=None)
def anytime_bottlenecks(num_networks: int = 8):
    rng = random.Random(0)
    graphs = [anytime.sample_architecture(rng) for _ in range(num_networks)]
    offsets = [0]
    for g in graphs:
        offsets.append(offsets[-1] + len(g))
    plan = EdgePlan.build(graphs, offsets, (3, 32, 32))
    gen = torch.Generator().manual_seed(0)
    blocks = torch.randn(len(plan.edges), BLOCK_CHANNELS, BLOCK_CHANNELS, 1, 1, generator=gen)
    lists = (plan.piece_ptr, list(range(len(plan.edges))), plan.piece_channels, plan.shapes,
             [0, 0] * len(plan.scales), plan.scales)
    total = sum(o * i for o, i in zip(plan.shapes[::4], plan.shapes[1::4]))
    return blocks.requires_grad_(True), lists, torch.randn(total, generator=gen)


def forward_backward(fn, blocks, lists, grad_out):
    return torch.autograd.grad(fn(blocks, *lists), blocks, grad_out)[0]


@functools.lru_cache(maxsize=None)
def checked() -> bool:
    """Kernel and reference agree (forward: the same bits) before anything is timed."""
    blocks, lists, grad_out = anytime_bottlenecks()
    with torch.no_grad():
        assert torch.equal(emit_edge_weights(blocks, *lists), emit_edges_reference(blocks, *lists))
    torch.testing.assert_close(forward_backward(emit_edge_weights, blocks, lists, grad_out),
                               forward_backward(emit_edges_reference, blocks, lists, grad_out), rtol=1e-5, atol=1e-5)
    return True


IMPLS = {"kernel": emit_edge_weights, "reference": emit_edges_reference}


@pytest.mark.parametrize("impl", ["kernel", "reference"])
def test_emit_edges_forward(benchmark, impl):
    blocks, lists, _ = anytime_bottlenecks()
    assert checked()
    benchmark.group = "emit edges forward, 8 anytime networks"
    with torch.no_grad():
        benchmark(IMPLS[impl], blocks, *lists)


@pytest.mark.parametrize("impl", ["kernel", "reference"])
def test_emit_edges_forward_backward(benchmark, impl):
    blocks, lists, grad_out = anytime_bottlenecks()
    assert checked()
    benchmark.group = "emit edges forward + backward, 8 anytime networks"
    benchmark(forward_backward, IMPLS[impl], blocks, lists, grad_out)
