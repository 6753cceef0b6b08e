"""propagate: compiled CPU kernel against propagate_reference on the paper's configuration.

One evaluation network of the paper (18 cells of 17 nodes, F=32; classification space), hidden size
D = 32, message hidden size Hm = 32, T = 5 forward-backward passes, mean-embedding hand-over on, one
shared parameter set (weights of the scale of a fresh GHN). Forward alone, and forward + backward (the
gradients of h0 and of all 8 parameters for a fixed output gradient).

Run: OMP_NUM_THREADS=1 python -m pytest bench/test_bench_propagate.py --benchmark-columns=mean,stddev,rounds

The reference takes about a second (forward) to several seconds (forward + backward) per call here, so it
runs a fixed, small number of rounds.
"""
from __future__ import annotations

import functools
import random

import pytest
import torch

from ghn_ext.graph import GraphBatch
from ghn_ext.ops.propagate import GNNParams, propagate, propagate_reference
from ghn_ext.ops.schedule import dag_schedule
from ghn_ext.spaces import classification

D = HM = 32
T = 5


@functools.lru_cache(maxsize=None)
def paper_inputs():
    arch = classification.sample_architecture(random.Random(0), 17, 18, 32)
    batch = GraphBatch.from_graphs([arch])
    intra = batch.edge_index[:, batch.block_edge_mask]
    schedule = dag_schedule(intra, batch.block_ptr, batch.num_nodes)
    gen = torch.Generator().manual_seed(0)
    shapes = [(1, HM, D), (1, HM), (1, D, HM), (1, D), (1, 3 * D, D), (1, 3 * D, D), (1, 3 * D), (1, 3 * D)]
    params = GNNParams(*[(torch.randn(s, generator=gen) * D ** -0.5).requires_grad_() for s in shapes])
    h0 = torch.randn(batch.num_nodes, D, generator=gen).requires_grad_()
    grad_out = torch.randn(batch.num_nodes, D, generator=gen)
    return (h0, batch.block_ptr, batch.graph_block_ptr, schedule, params), grad_out


def forward(fn, inputs):
    return fn(*inputs, T, "fb", True)


def forward_backward(fn, inputs, grad_out):
    out = forward(fn, inputs)
    return torch.autograd.grad(out, [inputs[0], *inputs[4]], grad_out)


@functools.lru_cache(maxsize=None)
def checked() -> bool:
    """Kernel and reference agree (outputs and gradients, float32 rounding); once, before timing."""
    inputs, grad_out = paper_inputs()
    got = forward_backward(propagate, inputs, grad_out)
    want = forward_backward(propagate_reference, inputs, grad_out)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-4)
    with torch.no_grad():
        torch.testing.assert_close(forward(propagate, inputs), forward(propagate_reference, inputs),
                                   rtol=1e-4, atol=2e-5)
    return True


IMPLS = {"kernel": propagate, "reference": propagate_reference}


@pytest.mark.parametrize("impl", ["kernel", "reference"])
def test_propagate_forward(benchmark, impl):
    inputs, _ = paper_inputs()
    assert checked()
    benchmark.group = "propagate forward, 1 network, T=5 fb"
    with torch.no_grad():
        if impl == "reference":
            benchmark.pedantic(forward, (IMPLS[impl], inputs), rounds=2, iterations=1)
        else:
            benchmark(forward, IMPLS[impl], inputs)


@pytest.mark.parametrize("impl", ["kernel", "reference"])
def test_propagate_forward_backward(benchmark, impl):
    inputs, grad_out = paper_inputs()
    assert checked()
    benchmark.group = "propagate forward+backward, 1 network, T=5 fb"
    if impl == "reference":
        benchmark.pedantic(forward_backward, (IMPLS[impl], inputs, grad_out), rounds=2, iterations=1)
    else:
        benchmark(forward_backward, IMPLS[impl], inputs, grad_out)
