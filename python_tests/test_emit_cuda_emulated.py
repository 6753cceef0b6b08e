"""The CUDA emission kernels' code (csrc/cuda/emit_kernel.cuh) run on the CPU, against the CPU kernel.

cuda_emulation/emit_emulation.cpp compiles the kernels, the packing of their plan table and the plan
checks for the host (cuda_emulation/shim.h) and runs every thread of the grid in turn. The CUDA
kernels promise the CPU kernel's bits in both directions (same summation order, explicitly rounded
operations), so forward and backward are compared for equality, in node mode and edge mode, on the
op tests' samples, with the launch configuration of emit_cuda.cu and with small grids whose threads
loop over many elements. Outputs start as NaN, so an element no thread writes shows. What this cannot
show: CUDA itself (the compiled device code, launch limits, streams) and speed;
test_emit_op.py / test_emit_edges_op.py cover the real kernels on a GPU.

The emulation library is compiled on first use (about 20 s on two cores) into build/ghn_ext_emit_emulation/.
"""
from __future__ import annotations

import pytest
import torch

import test_emit_edges_op as edges
import test_emit_op as nodes
from cuda_emulation import load_emulation, needs_emulation

THREADS = 256  # kThreads of emit_cuda.cu

pytestmark = [*needs_emulation("emit_edge_weights"), pytest.mark.slow]  # compiles the CUDA code for the CPU


@pytest.fixture(scope="module")
def emu():
    return load_emulation("ghn_ext_emit_emulation", "emit_emulation.cpp", ("csrc/emit_plan.cpp",))


def launch(total):
    """emit_cuda.cu's grid for `total` threads' worth of work, and a small grid that makes threads loop."""
    return [(max(1, min(-(-total // THREADS), 1 << 20)), THREADS), (3, 32)]


DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]


def check_same_bits(emulated, emulated_backward, op, backward_op, sample, dtype):
    """Forward and backward of the emulated kernels equal the CPU kernel's, with either launch."""
    blocks, lists = sample.blocks(dtype), sample.lists()
    want = op(blocks, *lists)
    g = torch.randn(want.shape, generator=torch.Generator().manual_seed(5), dtype=torch.float64).to(dtype)
    want_grad = backward_op(g, *lists, list(sample.block_shape))
    for grid, threads in launch(want.numel()) + launch(want_grad.numel()):
        assert torch.equal(emulated(blocks, *lists, grid, threads), want), (grid, threads)
        got_grad = emulated_backward(g, *lists, list(sample.block_shape), grid, threads)
        assert torch.equal(got_grad, want_grad), (grid, threads)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("sample", nodes.SAMPLES, ids=repr)
def test_node_mode_same_bits_as_cpu(emu, sample, dtype):
    check_same_bits(emu.emit_nodes, emu.emit_nodes_backward, torch.ops.ghn_ext.emit_weights.default,
                    torch.ops.ghn_ext._emit_weights_backward.default, sample, dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("sample", edges.SAMPLES, ids=repr)
def test_edge_mode_same_bits_as_cpu(emu, sample, dtype):
    check_same_bits(emu.emit_edges, emu.emit_edges_backward, torch.ops.ghn_ext.emit_edge_weights.default,
                    torch.ops.ghn_ext._emit_edge_weights_backward.default, sample, dtype)


def test_wrong_weights_would_show(emu):
    """The comparison can fail: the emulation run with other scales differs from the CPU kernel."""
    sample = edges.SAMPLES[1]
    blocks, (ptr, pb, pc, shapes, anchors, scales) = sample.blocks(), sample.lists()
    want = torch.ops.ghn_ext.emit_edge_weights.default(blocks, ptr, pb, pc, shapes, anchors, scales)
    assert not torch.equal(emu.emit_edges(blocks, ptr, pb, pc, shapes, anchors, [2 * s for s in scales], 1, 32),
                           want)


def test_one_thread_loops_over_the_whole_output(emu):
    sample = nodes.SAMPLES[2]
    blocks, lists = sample.blocks(), sample.lists()
    assert torch.equal(emu.emit_nodes(blocks, *lists, 1, 1), torch.ops.ghn_ext.emit_weights.default(blocks, *lists))


def test_plan_checks_reach_the_emulation(emu):
    sample = edges.SAMPLES[0]
    ptr, pb, pc, shapes, anchors, scales = sample.lists()
    with pytest.raises(IndexError):
        emu.emit_edges(sample.blocks(), ptr, [99], pc, shapes, anchors, scales, 1, 32)
