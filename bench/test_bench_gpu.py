"""GPU benchmarks (issue 5): the CUDA propagation and emission kernels against their baselines.

propagate, forward + backward (the gradients of h0 and of the 8 parameters for a fixed output gradient) at
the paper's configuration (`paper_inputs` of test_bench_propagate.py: one evaluation network of 18 cells of
17 nodes, D = Hm = 32, T = 5, forward-backward, hand-over on, one shared parameter set, float32), for 1 and
for 64 graphs (64 copies of that network in one batch), three ways: the CUDA kernel, propagate_reference on
the same GPU, and the compiled CPU kernel (all CPU threads). Every timed CUDA call ends with
torch.cuda.synchronize(). Targets: the CUDA kernel at least 100x faster than the reference on the GPU and
at least 20x faster than the CPU kernel.

emit_weights on CUDA, every weight of 8 evaluation networks (`paper_emission` of test_bench_emit.py): the
forward against a device-to-device copy of as many bytes as it writes (target: within 2x), and the backward
kernel (the block gradient) against a copy of as many bytes as that gradient.

The CUDA kernel's benchmark of each group runs last in it and stores the ratios to the baselines timed
before it in extra_info (in --benchmark-json), and prints them: speedup_vs_reference_cuda and
speedup_vs_kernel_cpu (baseline time / kernel time) for propagation, time_vs_copy (kernel time / copy time)
for emission.

Run: python -m pytest bench/test_bench_gpu.py --benchmark-columns=mean,stddev,rounds --benchmark-json=bench_gpu.json
(bench/gpu_check.sh does this on the GPU machine, after building and testing.)
"""
from __future__ import annotations

import functools

import pytest
import torch

from ghn_ext.ops import emit_weights
from ghn_ext.ops._extension import has_kernel
from ghn_ext.ops.propagate import GNNParams, propagate, propagate_reference
from ghn_ext.ops.schedule import Schedule

from test_bench_emit import paper_emission
from test_bench_propagate import T, paper_inputs

pytestmark = pytest.mark.skipif(
    not (torch.cuda.is_available() and has_kernel("propagate", "cuda") and has_kernel("emit_weights", "cuda")),
    reason="needs a CUDA device and the compiled extension with CUDA kernels",
)

MEANS: dict[tuple[str, str], float] = {}  # (group, impl) -> mean seconds, filled as the benchmarks run


def tiled(copies: int):
    """paper_inputs() repeated `copies` times as one batch of independent graphs (CPU tensors)."""
    (h0, block_ptr, graph_block_ptr, schedule, params), grad_out = paper_inputs()
    N, B, E = h0.shape[0], block_ptr.numel() - 1, schedule.in_src.numel()

    def cat(t, step, pointer=False):
        total = torch.tensor([t[-1].item() * copies]) if pointer else None
        parts = [(t[:-1] if pointer else t) + k * step for k in range(copies)]
        return torch.cat(parts + ([total] if pointer else []))

    s = schedule
    sched = Schedule(cat(s.order, N), s.level.repeat(copies), cat(s.reverse_order, N), cat(s.in_ptr, E, True),
                     cat(s.in_src, N), cat(s.out_ptr, E, True), cat(s.out_dst, N))
    h = h0.detach().repeat(copies, 1).requires_grad_()
    return (h, cat(block_ptr, N, True), cat(graph_block_ptr, B, True), sched, params), grad_out.repeat(copies, 1)


@functools.lru_cache(maxsize=None)
def propagation_inputs(graphs: int, device: str):
    (h0, block_ptr, graph_block_ptr, schedule, params), grad_out = tiled(graphs)
    to = lambda t: t.detach().to(device)  # noqa: E731
    inputs = (to(h0).requires_grad_(), to(block_ptr), to(graph_block_ptr), Schedule(*map(to, schedule)),
              GNNParams(*[to(p).requires_grad_() for p in params]))
    return inputs, to(grad_out)


def forward_backward(fn, inputs, grad_out):
    out = fn(*inputs, T, "fb", True)
    grads = torch.autograd.grad(out, [inputs[0], *inputs[4]], grad_out)
    if grad_out.is_cuda:
        torch.cuda.synchronize()
    return grads


@functools.lru_cache(maxsize=None)
def checked(graphs: int) -> bool:
    """CUDA kernel, CPU kernel and the reference agree (float32 rounding); once, before timing."""
    got = forward_backward(propagate, *propagation_inputs(graphs, "cuda"))
    cpu = forward_backward(propagate, *propagation_inputs(graphs, "cpu"))
    for a, b in zip(got, cpu):
        torch.testing.assert_close(a.cpu(), b, rtol=1e-3, atol=1e-4)
    if graphs == 1:  # the reference's time grows with the batch only a little, but its check is slow
        ref = forward_backward(propagate_reference, *propagation_inputs(graphs, "cuda"))
        for a, b in zip(got, ref):
            torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-4)
    return True


def record(benchmark, group: str, impl: str) -> None:
    """Keeps this benchmark's mean time (absent with --benchmark-disable)."""
    stats = getattr(benchmark, "stats", None)
    if stats is not None:
        MEANS[(group, impl)] = stats.stats.mean


def store_ratio(benchmark, group: str, key: str, numerator: str, denominator: str) -> None:
    """extra_info[key] = mean time of `numerator` / mean time of `denominator` (both timed in `group`)."""
    if (group, numerator) in MEANS and (group, denominator) in MEANS:
        a, b = MEANS[(group, numerator)], MEANS[(group, denominator)]
        benchmark.extra_info[key] = round(a / b, 3)
        print(f"\n{group}: {key} = {a * 1e3:.3f} ms / {b * 1e3:.3f} ms = {a / b:.3f}")


PROPAGATE_IMPLS = {  # (function, device); the CUDA kernel last
    "reference_cuda": (propagate_reference, "cuda"),
    "kernel_cpu": (propagate, "cpu"),
    "kernel_cuda": (propagate, "cuda"),
}


@pytest.mark.parametrize("graphs", [1, 64])
@pytest.mark.parametrize("impl", list(PROPAGATE_IMPLS))
def test_propagate_forward_backward_gpu(benchmark, impl, graphs):
    assert checked(graphs)
    fn, device = PROPAGATE_IMPLS[impl]
    inputs, grad_out = propagation_inputs(graphs, device)
    group = f"propagate forward+backward, {graphs} network(s), T={T} fb"
    benchmark.group = group
    if impl == "reference_cuda":  # seconds per call: a fixed, small number of rounds
        benchmark.pedantic(forward_backward, (fn, inputs, grad_out), rounds=2, iterations=1, warmup_rounds=0)
    else:
        benchmark(forward_backward, fn, inputs, grad_out)
    record(benchmark, group, impl)
    if impl == "kernel_cuda":
        store_ratio(benchmark, group, "speedup_vs_reference_cuda", "reference_cuda", "kernel_cuda")
        store_ratio(benchmark, group, "speedup_vs_kernel_cpu", "kernel_cpu", "kernel_cuda")


@functools.lru_cache(maxsize=None)
def emission_inputs(networks: int):
    blocks, lists, grad_out = paper_emission(networks)
    blocks = blocks.detach().cuda()
    out = emit_weights(blocks, *lists)
    assert torch.equal(out.cpu(), emit_weights(blocks.cpu(), *lists))  # agree with the CPU kernel, once
    return blocks, lists, grad_out.cuda(), out.numel()


def synchronized(fn, *args):
    out = fn(*args)
    torch.cuda.synchronize()
    return out


def copy_into(dst, src):
    return dst.copy_(src)


@pytest.mark.parametrize("impl", ["copy", "kernel_cuda"])
def test_emit_forward_gpu(benchmark, impl):
    blocks, lists, _, total = emission_inputs(8)
    group = "emit forward, 8 networks, CUDA"
    benchmark.group = group
    with torch.no_grad():
        if impl == "copy":  # as many bytes as the emission writes
            src, dst = torch.empty(total, device="cuda"), torch.empty(total, device="cuda")
            benchmark(synchronized, copy_into, dst, src)
        else:
            benchmark(synchronized, emit_weights, blocks, *lists)
    benchmark.extra_info["bytes_written"] = total * 4
    record(benchmark, group, impl)
    if impl == "kernel_cuda":
        store_ratio(benchmark, group, "time_vs_copy", "kernel_cuda", "copy")


@pytest.mark.parametrize("impl", ["copy", "kernel_cuda"])
def test_emit_backward_gpu(benchmark, impl):
    blocks, lists, grad_out, _ = emission_inputs(8)
    group = "emit backward (block gradient), 8 networks, CUDA"
    benchmark.group = group
    shape = list(blocks.shape)
    with torch.no_grad():
        if impl == "copy":  # as many bytes as the block gradient
            src, dst = torch.empty(blocks.numel(), device="cuda"), torch.empty(blocks.numel(), device="cuda")
            benchmark(synchronized, copy_into, dst, src)
        else:
            backward = torch.ops.ghn_ext._emit_weights_backward.default
            benchmark(synchronized, backward, grad_out, *lists, shape)
    record(benchmark, group, impl)
    if impl == "kernel_cuda":
        store_ratio(benchmark, group, "time_vs_copy", "kernel_cuda", "copy")
