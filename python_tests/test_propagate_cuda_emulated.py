"""The CUDA propagation kernels' code (csrc/cuda/propagate_kernel.cuh) run on the CPU, against the CPU kernel.

cuda_emulation/ compiles the kernel header for the host with a shim that runs every CUDA thread of a CTA as a
std::thread (__syncthreads and __syncwarp become barriers), so the kernels' indexing, update groups, saved
layout, barriers and gradient bookkeeping are exercised where no GPU is at hand; workspaces start as NaN, so
reading anything the kernel did not write shows. The shared-memory budget is an argument, which also reaches
the placements of the workspace in global memory. What this cannot show: CUDA-only behaviour (warp
scheduling, the memory model's corner cases, the compiled code itself) and speed; test_propagate_cuda.py
covers the real kernels on a GPU. For races, the extension can be built with -fsanitize=thread (see
cuda_emulation/README.md).

The emulation library is compiled on first use (about a minute on two cores) into build/ghn_ext_cuda_emulation/.
"""
from __future__ import annotations

import random

import pytest
import torch

from cuda_emulation import load_emulation, needs_emulation
from test_propagate_op import HAND, RANDOM, Case, make_h0, make_params, op_args

H100_SMEM = 227 * 1024  # the H100's opt-in shared memory per block

pytestmark = [*needs_emulation("propagate"), pytest.mark.slow]  # compiles the CUDA code for the CPU


@pytest.fixture(scope="module")
def emu():
    return load_emulation("ghn_ext_cuda_emulation", "propagate_emulation.cpp")


def index_args(case, order=None):
    s = case.schedule
    return [case.block_ptr, case.graph_block_ptr, s.order if order is None else order, s.in_ptr, s.in_src,
            s.out_ptr, s.out_dst]


def compare(emu, case, D, Hm, P, T, fb, pe, dtype=torch.float64, budget=H100_SMEM, generic=False, order=None):
    """Emulated forward (h, saved) and backward equal the CPU kernel's within rounding."""
    params = [p.detach().to(dtype) * min(1.0, 2 * D ** -0.5) for p in make_params(P, D, Hm)]
    h0 = make_h0(case.N, D).detach().to(dtype)
    idx = index_args(case, order)
    args = (h0, *idx, *params, T, fb, pe)
    h_cpu, saved_cpu = torch.ops.ghn_ext.propagate.default(*args)
    h, saved = emu.emulate(False, h0, None, None, idx, params, T, fb, pe, budget, generic)
    tol = dict(rtol=1e-10, atol=1e-12) if dtype == torch.float64 else dict(rtol=1e-4, atol=2e-5)
    torch.testing.assert_close(h, h_cpu, **tol)
    torch.testing.assert_close(saved, saved_cpu, **tol)
    g = torch.randn(h.shape, generator=torch.Generator().manual_seed(3), dtype=dtype)
    got = emu.emulate(True, h_cpu, g, saved_cpu, idx, params, T, fb, pe, budget, generic)
    want = torch.ops.ghn_ext._propagate_backward.default(g, h_cpu, saved_cpu, *args[1:])
    tol = dict(rtol=1e-9, atol=1e-11) if dtype == torch.float64 else dict(rtol=1e-3, atol=1e-4)
    for name, a, b in zip(["h0", "msg_w1", "msg_b1", "msg_w2", "msg_b2", "gru_w_ih", "gru_w_hh", "gru_b_ih",
                           "gru_b_hh"], got, want):
        torch.testing.assert_close(a, b, **tol, msg=lambda m: f"gradient of {name}: {m}")


@pytest.mark.parametrize("case", HAND, ids=repr)
@pytest.mark.parametrize("fb", [True, False], ids=["fb", "sync"])
@pytest.mark.parametrize("pe,shared", [(True, True), (True, False), (False, True)],
                         ids=["pass-shared", "pass-per_block", "nopass-shared"])
def test_emulated_matches_cpu_hand_made(emu, case, fb, pe, shared):
    compare(emu, case, 4, 5, 1 if shared else case.max_blocks + 1, 2, fb, pe)


@pytest.mark.parametrize("case", [HAND[4], HAND[8], RANDOM[0]], ids=repr)
@pytest.mark.parametrize("fb", [True, False], ids=["fb", "sync"])
@pytest.mark.parametrize("generic", [False, True], ids=["specialised", "generic"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_emulated_hidden_32(emu, case, fb, generic, dtype):
    compare(emu, case, 32, 32, 1, 2, fb, True, dtype, generic=generic)


@pytest.mark.parametrize("sizes", [(3, 2), (33, 1), (1, 40)], ids=str)
def test_emulated_odd_sizes(emu, sizes):
    compare(emu, RANDOM[0], *sizes, RANDOM[0].max_blocks, 3, True, True)


# budgets (bytes; float64, D=4, Hm=5, 3 sets, 4 warps) for which: nothing but the warps' vectors fits;
# one weight set fits (reloaded at each block); one set and the delta rows; all 3 sets and the delta rows;
# everything
BUDGETS = [2200, 4000, 5000, 8000, 15000]


def test_emulated_budgets_reach_every_placement(emu):
    # (smem bytes, resident, weights / delta / gradient copies in smem, global elements per CTA)
    places = [emu.placement(4, 5, 3, 6, b, True, True) for b in BUDGETS]
    assert [p[1:5] for p in places] == [[0, 0, 0, 0], [0, 1, 0, 0], [0, 1, 1, 0], [1, 1, 1, 0], [1, 1, 1, 1]]
    # the paper's configuration on an H100: everything in shared memory (the one parameter set
    # resident), below the 227 KB opt-in limit; one set at a time with 20 sets; float64 keeps the
    # gradient copies in global memory
    assert emu.placement(32, 32, 1, 20, H100_SMEM, True, False)[1:5] == [1, 1, 1, 1]
    assert emu.placement(32, 32, 20, 20, H100_SMEM, True, False)[1:5] == [0, 1, 1, 1]
    assert emu.placement(32, 32, 1, 20, H100_SMEM, True, True)[1:5] == [1, 1, 1, 0]


@pytest.mark.parametrize("budget", BUDGETS)
@pytest.mark.parametrize("case", [HAND[7], HAND[8]], ids=repr)
@pytest.mark.parametrize("fb", [True, False], ids=["fb", "sync"])
def test_emulated_workspace_placements(emu, budget, case, fb):
    compare(emu, case, 4, 5, 3, 2, fb, True, budget=budget)


@pytest.mark.parametrize("seed", range(12))
def test_emulated_any_order(emu, seed):
    """Orders that are no topological order: the fb groups must still reproduce one-at-a-time updates."""
    rng = random.Random(seed)
    case = rng.choice(HAND[2:] + RANDOM[:1])
    order = case.schedule.order.clone()
    bp = case.block_ptr.tolist()
    for b in range(len(bp) - 1):
        seg = order[bp[b]:bp[b + 1]].tolist()
        rng.shuffle(seg)
        order[bp[b]:bp[b + 1]] = torch.tensor(seg)
    compare(emu, case, 3, 2, 1, rng.randint(1, 3), rng.random() < 0.7, rng.random() < 0.5, order=order)


def test_emulated_graph_without_blocks(emu):
    case = Case("empty_graph", [[0, 1], [1, 2]], [0, 3, 4], [0, 1, 1, 2])
    for fb in (True, False):
        compare(emu, case, 4, 5, 1, 2, fb, True)


def test_emulated_op_args_helper_agrees():
    # index_args above must list the op's index tensors in op_args' order
    case = HAND[8]
    params, h0 = make_params(1, 4, 5), make_h0(case.N, 4)
    assert all(a is b for a, b in zip(op_args(case, params, h0)[1:8], index_args(case)))
