"""emit_weights: compiled CPU kernel against emit_reference on the paper's networks.

Every weight of 1 or 8 evaluation networks (18 cells of 17 nodes, F=32; blocks (32, 32, 7, 7), as the
GHN of the paper emits them), targets from ghn_ext.models.ghn.EmissionPlan, blocks random. Forward, and
forward + backward (the gradient of the blocks for a fixed output gradient).

Run: OMP_NUM_THREADS=1 python -m pytest bench/test_bench_emit.py --benchmark-columns=mean,stddev,rounds

The reference's backward costs one dense (N, 32, 32, 7, 7) zero-filled gradient per target (autograd of
`blocks[n, ...]`), so it grows with targets x nodes: about 30 s for one network here, and 64 times that
for 8. Its 8-network forward + backward therefore runs only with GHN_BENCH_SLOW=1; the kernel's gradient
for 8 networks is checked by the adjoint identity <emit(b), g> = <b, emit_backward(g)> instead.
"""
from __future__ import annotations

import functools
import os
import random

import pytest
import torch

from ghn_ext.models.ghn import EmissionPlan
from ghn_ext.ops.emit import emit_reference, emit_weights
from ghn_ext.spaces import classification

BLOCK_CHANNELS, KERNEL = 32, 7


@functools.lru_cache(maxsize=None)
def paper_emission(num_networks: int):
    """(blocks, (node_index, shapes, anchors, scales), grad_out) for `num_networks` evaluation networks."""
    rng = random.Random(0)
    graphs = [classification.sample_architecture(rng, 17, 18, 32) for _ in range(num_networks)]
    offsets = [0]
    for g in graphs:
        offsets.append(offsets[-1] + len(g.nodes))
    plan = EmissionPlan.build(graphs, offsets, KERNEL, (3, 32, 32))
    gen = torch.Generator().manual_seed(num_networks)
    blocks = torch.randn(offsets[-1], BLOCK_CHANNELS, BLOCK_CHANNELS, KERNEL, KERNEL, generator=gen)
    lists = (plan.node_index, plan.shapes, plan.anchors, plan.scales)
    total = sum(o * i * kh * kw for o, i, kh, kw in zip(*[iter(plan.shapes)] * 4))
    grad_out = torch.randn(total, generator=gen)
    return blocks.requires_grad_(True), lists, grad_out


def forward_backward(fn, blocks, lists, grad_out):
    out = fn(blocks, *lists)
    return torch.autograd.grad(out, blocks, grad_out)[0]


@functools.lru_cache(maxsize=None)
def checked(num_networks: int, backward: bool) -> bool:
    """Kernel and reference agree (forward: the same bits); run once per configuration, before timing."""
    blocks, lists, grad_out = paper_emission(num_networks)
    with torch.no_grad():
        out = emit_weights(blocks, *lists)
        assert torch.equal(out, emit_reference(blocks, *lists))
    if backward:
        got = forward_backward(emit_weights, blocks, lists, grad_out)
        if num_networks == 1 or os.environ.get("GHN_BENCH_SLOW") == "1":
            want = forward_backward(emit_reference, blocks, lists, grad_out)
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
        # adjoint identity, accumulated in float64
        lhs = torch.dot(out.double(), grad_out.double())
        rhs = torch.dot(blocks.detach().double().flatten(), got.double().flatten())
        torch.testing.assert_close(lhs, rhs, rtol=1e-6, atol=1e-6)
    return True


IMPLS = {"kernel": emit_weights, "reference": emit_reference}


@pytest.mark.parametrize("num_networks", [1, 8])
@pytest.mark.parametrize("impl", ["kernel", "reference"])
def test_emit_forward(benchmark, impl, num_networks):
    blocks, lists, _ = paper_emission(num_networks)
    assert checked(num_networks, backward=False)
    benchmark.group = f"emit forward, {num_networks} network(s)"
    with torch.no_grad():
        benchmark(IMPLS[impl], blocks, *lists)


@pytest.mark.parametrize("num_networks", [1, 8])
@pytest.mark.parametrize("impl", ["kernel", "reference"])
def test_emit_forward_backward(benchmark, impl, num_networks):
    if impl == "reference" and num_networks > 1 and os.environ.get("GHN_BENCH_SLOW") != "1":
        pytest.skip("the reference's backward takes about 64 x the 1-network time here; set GHN_BENCH_SLOW=1")
    blocks, lists, grad_out = paper_emission(num_networks)
    assert checked(num_networks, backward=True)
    benchmark.group = f"emit forward+backward, {num_networks} network(s)"
    args = (IMPLS[impl], blocks, lists, grad_out)
    if impl == "reference":  # tens of seconds per call: a fixed, small number of rounds
        benchmark.pedantic(forward_backward, args, rounds=3, iterations=1)
    else:
        benchmark(forward_backward, *args)
