"""propagate: compiled CPU kernel against propagate_reference on the paper's configuration.

Evaluation networks of the paper (18 cells of 17 nodes, F=32; classification space): 1, 8 or 64 of them
as one batch, hidden size D = 32, message hidden size Hm = 32, T = 5 forward-backward passes,
mean-embedding hand-over on, one shared parameter set (weights of the scale of a fresh GHN). Forward
alone, and forward + backward (the gradients of h0 and of all 8 parameters for a fixed output gradient).
The reference advances the graphs of a batch in lockstep (one batched step per update index), so its
cost grows slowly with the batch; the kernel's grows linearly, spread over the threads.

The physical floor: `test_propagate_flop_rate` reports the kernel's achieved GFLOP/s (matrix-product
FLOPs of the algorithm the kernel runs, counted by `propagation_flops`) and `test_small_matmul_peak`
the rate torch.mm reaches on a product of the same inner sizes, both printed at the end of the run.

Run: OMP_NUM_THREADS=1 python -m pytest bench/test_bench_propagate.py --benchmark-columns=mean,stddev,rounds

The reference takes about a second (forward) to several seconds (forward + backward) per call here, so it
runs a fixed, small number of rounds.
"""
from __future__ import annotations

import functools
import random

import pytest
import torch

from ghn_ext.core.graph import GraphBatch
from ghn_ext.ops.propagate import GNNParams, propagate, propagate_reference
from ghn_ext.ops.schedule import dag_schedule
from ghn_ext.spaces import classification

D = HM = 32
T = 5


@functools.lru_cache(maxsize=None)
def paper_inputs(num_networks: int = 1):
    rng = random.Random(0)
    archs = [classification.sample_architecture(rng, 17, 18, 32) for _ in range(num_networks)]
    batch = GraphBatch.from_graphs(archs)
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
def checked(num_networks: int = 1) -> bool:
    """Kernel and reference agree (outputs and gradients, float32 rounding); once, before timing."""
    inputs, grad_out = paper_inputs(num_networks)
    got = forward_backward(propagate, inputs, grad_out)
    want = forward_backward(propagate_reference, inputs, grad_out)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-4)
    with torch.no_grad():
        torch.testing.assert_close(forward(propagate, inputs), forward(propagate_reference, inputs),
                                   rtol=1e-4, atol=2e-5)
    return True


def propagation_flops(inputs) -> tuple[int, int]:
    """Matrix-product FLOPs (2 per multiply-add) of one forward and one backward, as the kernel runs
    them; elementwise work (gates, relu, sums) is left out. Per update of a node with `deg` neighbours:
    the message's first layer per neighbour (2 D Hm), its second layer once on the summed activations
    (2 Hm D, when deg > 0), the GRU's two gate products (2 x 2 x 3D x D). The backward recomputes the
    forward, then the input gradients (the transposed products) and the weight gradients (outer
    products) cost the forward's products twice over."""
    h0, block_ptr, graph_block_ptr, schedule, _ = inputs
    in_deg = (schedule.in_ptr[1:] - schedule.in_ptr[:-1]).tolist()
    out_deg = (schedule.out_ptr[1:] - schedule.out_ptr[:-1]).tolist()
    order, starts = schedule.order.tolist(), block_ptr.tolist()

    def update(deg: int) -> int:
        return 2 * D * HM * deg + (2 * HM * D if deg else 0) + 12 * D * D

    forward = 0
    for s, e in zip(starts[:-1], starts[1:]):
        seq = order[s:e]  # fb: all nodes from predecessors, then all but the last from successors
        forward += T * (sum(update(in_deg[v]) for v in seq) + sum(update(out_deg[v]) for v in seq[:-1]))
    return forward, 3 * forward


IMPLS = {"kernel": propagate, "reference": propagate_reference}
NETWORKS = [1, 8, 64]
REFERENCE_ROUNDS = {1: 2, 8: 1, 64: 1}


@pytest.mark.parametrize("num_networks", NETWORKS)
@pytest.mark.parametrize("impl", ["kernel", "reference"])
def test_propagate_forward(benchmark, impl, num_networks):
    inputs, _ = paper_inputs(num_networks)
    assert checked(min(num_networks, 8))
    benchmark.group = f"propagate forward, {num_networks} network(s), T=5 fb"
    with torch.no_grad():
        if impl == "reference":
            benchmark.pedantic(forward, (IMPLS[impl], inputs), rounds=REFERENCE_ROUNDS[num_networks],
                               iterations=1)
        else:
            benchmark(forward, IMPLS[impl], inputs)


@pytest.mark.parametrize("num_networks", NETWORKS)
@pytest.mark.parametrize("impl", ["kernel", "reference"])
def test_propagate_forward_backward(benchmark, impl, num_networks):
    inputs, grad_out = paper_inputs(num_networks)
    assert checked(min(num_networks, 8))
    benchmark.group = f"propagate forward+backward, {num_networks} network(s), T=5 fb"
    args = (IMPLS[impl], inputs, grad_out)
    if impl == "reference":
        benchmark.pedantic(forward_backward, args, rounds=REFERENCE_ROUNDS[num_networks], iterations=1)
    else:
        benchmark(forward_backward, *args)


def test_propagate_flop_rate(benchmark, figures):
    """The raw kernels (no autograd), forward then backward, one network: FLOPs / time."""
    inputs, grad_out = paper_inputs()
    assert checked()
    h0, block_ptr, graph_block_ptr, s, params = inputs
    args = (block_ptr, graph_block_ptr, s.order, s.in_ptr, s.in_src, s.out_ptr, s.out_dst)
    params = [p.detach() for p in params]
    ops = torch.ops.ghn_ext

    def run():
        h, saved = ops.propagate.default(h0.detach(), *args, *params, T, True, True)
        ops._propagate_backward.default(grad_out, h, saved, *args, *params, T, True, True)

    benchmark.group = "physical floor"
    benchmark(run)
    fwd, bwd = propagation_flops(inputs)
    rate = (fwd + bwd) / benchmark.stats.stats.min / 1e9
    benchmark.extra_info.update(flops_forward=fwd, flops_backward=bwd, gflops=rate)
    figures(f"propagation kernel: {fwd / 1e6:.1f} MFLOP forward + {bwd / 1e6:.1f} MFLOP backward, "
            f"{rate:.1f} GFLOP/s (best round)")


def test_small_matmul_peak(benchmark, figures):
    """torch.mm on the kernel's inner sizes: (4096, 32) x (32, 96), written into a preallocated output."""
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(4096, D, generator=gen), torch.randn(D, 3 * D, generator=gen)
    out = torch.empty(4096, 3 * D)
    benchmark.group = "physical floor"
    benchmark(torch.mm, a, b, out=out)
    rate = 2 * a.shape[0] * D * 3 * D / benchmark.stats.stats.min / 1e9
    benchmark.extra_info.update(gflops=rate)
    figures(f"small matrix product peak (torch.mm (4096, 32) x (32, 96), {torch.get_num_threads()} "
            f"thread(s)): {rate:.1f} GFLOP/s (best round)")
