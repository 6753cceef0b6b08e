"""Tests of ghn_ext::propagate / ghn_ext::_propagate_backward: the compiled CPU kernel against the
pure-PyTorch reference ``propagate_reference``.

Hand-made graphs (single node, chain, wide fan-in, stacked blocks), batches of unequal random
architectures and a hypothesis fuzz over random DAG batches run through both, for both schemes, with
the mean-embedding hand-over on and off and shared or per-block parameters: outputs and gradients must
agree within rounding. The kernel has a portable and an AVX2 build of its worker and a compile-time
specialisation for hidden size 32; tests run every one of them. The op also passes gradcheck (float64)
and torch.library.opcheck, and rejects bad inputs with clear errors. Tests skip when the compiled
library is not built.
"""
from __future__ import annotations

import random

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ghn_ext.ops._extension as ext
from ghn_ext.core.graph import GraphBatch
from ghn_ext.ops import HAS_EXTENSION
from ghn_ext.ops.propagate import GNNParams, propagate, propagate_reference
from ghn_ext.ops.schedule import dag_schedule
from ghn_ext.spaces import classification, nb201

requires_ext = pytest.mark.skipif(
    not (HAS_EXTENSION and ext.has_kernel("propagate", "cpu")),
    reason=f"compiled extension ghn_ext._C not built ({ext.IMPORT_ERROR})",
)
pytestmark = requires_ext


class Case:
    """A batch: edges (global ids, intra-block), block_ptr and graph_block_ptr."""

    def __init__(self, name, edges, block_ptr, graph_block_ptr):
        self.name = name
        self.edges = torch.tensor(edges, dtype=torch.long).reshape(2, -1)
        self.block_ptr = torch.tensor(block_ptr, dtype=torch.long)
        self.graph_block_ptr = torch.tensor(graph_block_ptr, dtype=torch.long)
        self.N = int(block_ptr[-1])
        self.schedule = dag_schedule(self.edges, self.block_ptr, self.N)
        gbp = graph_block_ptr
        self.max_blocks = max((gbp[g + 1] - gbp[g] for g in range(len(gbp) - 1)), default=0)

    def __repr__(self):
        return self.name


def from_archs(name, archs):
    batch = GraphBatch.from_graphs(archs)
    intra = batch.edge_index[:, batch.block_edge_mask]
    case = Case.__new__(Case)
    case.name, case.edges, case.block_ptr, case.graph_block_ptr = name, intra, batch.block_ptr, batch.graph_block_ptr
    case.N = batch.num_nodes
    case.schedule = dag_schedule(intra, batch.block_ptr, batch.num_nodes)
    case.max_blocks = max(g.num_blocks for g in archs)
    return case


HAND = [
    Case("single", [[], []], [0, 1], [0, 1]),
    Case("pair", [[0], [1]], [0, 2], [0, 1]),
    Case("chain", [[0, 1, 2, 3], [1, 2, 3, 4]], [0, 5], [0, 1]),
    Case("fan_in", [[0, 1, 2, 3, 4, 5], [6, 6, 6, 6, 6, 6]], [0, 7], [0, 1]),
    Case("fan_out_in", [[0, 0, 0, 1, 2, 3], [1, 2, 3, 4, 4, 4]], [0, 5], [0, 1]),
    Case("two_inputs", [[0, 1, 2], [2, 2, 3]], [0, 4], [0, 1]),
    Case("stacked2", [[0, 0, 1, 3], [1, 2, 2, 4]], [0, 3, 5], [0, 2]),
    Case("stacked3", [[0, 2, 3, 2, 5, 6, 5], [1, 3, 4, 4, 6, 7, 7]], [0, 2, 5, 8], [0, 3]),
    Case("batch_unequal", [[0, 0, 1, 3, 5, 5, 6, 7, 9], [1, 2, 2, 4, 6, 7, 8, 8, 10]],
         [0, 3, 5, 9, 11, 12], [0, 2, 3, 5]),
    Case("singletons_stacked", [[], []], [0, 1, 2, 3], [0, 3]),
]
RANDOM = [
    from_archs("random_4", [classification.sample_architecture(random.Random(s), 5 + s, 2 + s % 2, 8)
                            for s in range(4)]),
    from_archs("random_paper", [classification.sample_architecture(random.Random(0), 17, 18, 32)]),
    from_archs("random_nb201", [nb201.sample_architecture(random.Random(s)) for s in range(3)]),
]


def make_params(P, D, Hm, dtype=torch.float64, seed=0, scale=0.5):
    g = torch.Generator().manual_seed(seed)
    shapes = [(P, Hm, D), (P, Hm), (P, D, Hm), (P, D), (P, 3 * D, D), (P, 3 * D, D), (P, 3 * D), (P, 3 * D)]
    return GNNParams(*[(torch.randn(s, generator=g, dtype=dtype) * scale).requires_grad_() for s in shapes])


def make_h0(N, D, dtype=torch.float64, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(N, D, generator=g, dtype=dtype).requires_grad_()


def run_both(case, P, D, Hm, T, scheme, pe, dtype):
    # weights of the scale of a fresh GHN (~1/sqrt(D)): much larger ones make long propagations chaotic,
    # so that float32 rounding alone changes the result
    params = make_params(P, D, Hm, dtype, scale=min(0.5, D ** -0.5))
    h0 = make_h0(case.N, D, dtype)
    args = (case.block_ptr, case.graph_block_ptr, case.schedule)
    out = propagate(h0, *args, params, T, scheme, pe)
    ref = propagate_reference(h0, *args, params, T, scheme, pe)
    w = torch.randn(out.shape, generator=torch.Generator().manual_seed(2), dtype=dtype)
    g_out = torch.autograd.grad((out * w).sum(), [h0, *params], allow_unused=True, materialize_grads=True)
    g_ref = torch.autograd.grad((ref * w).sum(), [h0, *params], allow_unused=True, materialize_grads=True)
    return out, ref, g_out, g_ref


def assert_close(a, b, dtype):
    if dtype == torch.float64:
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    else:
        torch.testing.assert_close(a, b, rtol=1e-4, atol=2e-5)


@pytest.mark.parametrize("case", HAND, ids=repr)
@pytest.mark.parametrize("scheme", ["fb", "sync"])
@pytest.mark.parametrize("pe", [True, False])
@pytest.mark.parametrize("shared", [True, False])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_matches_reference_hand_made(case, scheme, pe, shared, dtype):
    P = 1 if shared else case.max_blocks + 1
    out, ref, g_out, g_ref = run_both(case, P, 4, 5, 2, scheme, pe, dtype)
    assert_close(out, ref, dtype)
    for a, b in zip(g_out, g_ref):
        assert_close(a, b, dtype)


@pytest.fixture(params=["auto", "generic"])
def worker_isa(request, monkeypatch):
    """Runs a test on the worker the CPU selects (AVX2 where available) and on the portable one."""
    if request.param == "generic":
        monkeypatch.setenv("GHN_EXT_CPU_GENERIC", "1")
    else:
        monkeypatch.delenv("GHN_EXT_CPU_GENERIC", raising=False)
    return request.param


@pytest.mark.parametrize("case", [HAND[4], HAND[8]], ids=repr)
@pytest.mark.parametrize("D,Hm", [(32, 32), (4, 5)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_every_worker_build_matches_reference(case, D, Hm, dtype, worker_isa):
    out, ref, g_out, g_ref = run_both(case, 2 * case.max_blocks, D, Hm, 2, "fb", True, dtype)
    assert_close(out, ref, dtype)
    for a, b in zip(g_out, g_ref):
        assert_close(a, b, dtype)


@pytest.mark.parametrize("case", RANDOM, ids=repr)
@pytest.mark.parametrize("scheme", ["fb", "sync"])
@pytest.mark.parametrize("shared", [True, False])
def test_matches_reference_random_architectures(case, scheme, shared, worker_isa):
    dtype = torch.float32
    P = 1 if shared else case.max_blocks
    out, ref, g_out, g_ref = run_both(case, P, 32, 32, 2 if case.name == "random_paper" else 3, scheme,
                                      True, dtype)
    assert_close(out, ref, dtype)
    for a, b in zip(g_out, g_ref):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-4)


@st.composite
def dag_batches(draw):
    """A batch of 1-3 graphs of 1-3 blocks of 1-6 nodes; random forward edges inside each block."""
    src, dst, block_ptr, graph_block_ptr = [], [], [0], [0]
    for _ in range(draw(st.integers(1, 3))):
        for _ in range(draw(st.integers(1, 3))):
            start, n = block_ptr[-1], draw(st.integers(1, 6))
            for j in range(1, n):
                for i in range(j):
                    if draw(st.booleans()):
                        src.append(start + i)
                        dst.append(start + j)
            block_ptr.append(start + n)
        graph_block_ptr.append(len(block_ptr) - 1)
    return Case("fuzz", [src, dst], block_ptr, graph_block_ptr)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(dag_batches(), st.sampled_from([(3, 2), (4, 5), (32, 32)]), st.integers(1, 3),
       st.sampled_from(["fb", "sync"]), st.booleans(), st.booleans())
def test_fuzz_random_dag_batches(case, sizes, T, scheme, pe, shared):
    D, Hm = sizes
    P = 1 if shared else case.max_blocks
    out, ref, g_out, g_ref = run_both(case, P, D, Hm, T, scheme, pe, torch.float64)
    assert_close(out, ref, torch.float64)
    for a, b in zip(g_out, g_ref):
        assert_close(a, b, torch.float64)


def test_fallback_to_reference_when_forced(monkeypatch):
    case = HAND[6]
    params, h0 = make_params(1, 4, 5), make_h0(case.N, 4)
    args = (h0, case.block_ptr, case.graph_block_ptr, case.schedule, params, 2, "fb", True)
    monkeypatch.setenv("GHN_EXT_REFERENCE", "1")
    forced = propagate(*args)
    monkeypatch.delenv("GHN_EXT_REFERENCE")
    torch.testing.assert_close(forced, propagate_reference(*args), rtol=0, atol=0)
    torch.testing.assert_close(propagate(*args), forced, rtol=1e-10, atol=1e-12)


def op_args(case, params, h0, T=2, fb=True, pe=True):
    s = case.schedule
    return (h0, case.block_ptr, case.graph_block_ptr, s.order, s.in_ptr, s.in_src, s.out_ptr, s.out_dst,
            *params, T, fb, pe)


@pytest.mark.parametrize("case", [HAND[0], HAND[4], HAND[7], HAND[8]], ids=repr)
@pytest.mark.parametrize("scheme", ["fb", "sync"])
def test_gradcheck(case, scheme):
    params = make_params(case.max_blocks, 3, 4)
    h0 = make_h0(case.N, 3)

    def f(h0, *params):
        return propagate(h0, case.block_ptr, case.graph_block_ptr, case.schedule, GNNParams(*params), 2,
                         scheme, True)

    assert torch.autograd.gradcheck(f, (h0, *params), eps=1e-6, atol=1e-7)


@pytest.mark.parametrize("case", [HAND[2], HAND[7], HAND[8]], ids=repr)
@pytest.mark.parametrize("fb", [True, False])
def test_opcheck(case, fb):
    params = make_params(1 if fb else case.max_blocks, 3, 4)
    h0 = make_h0(case.N, 3)
    torch.library.opcheck(torch.ops.ghn_ext.propagate.default, op_args(case, params, h0, 2, fb, True))


def test_saved_is_not_needed_as_gradient_and_only_h_gradient_flows():
    case = HAND[7]
    params, h0 = make_params(1, 4, 5), make_h0(case.N, 4)
    h, saved = torch.ops.ghn_ext.propagate.default(*op_args(case, params, h0))
    assert saved.shape == (2 * 2 * case.N, 4)
    (g,) = torch.autograd.grad(h.sum(), [h0])
    assert torch.isfinite(g).all()


# --------------------------------------------------------------------------------------------
# errors

def call(case, params, h0, **kw):
    return torch.ops.ghn_ext.propagate.default(*op_args(case, params, h0, **kw))


def test_error_dtype():
    case = HAND[2]
    params = make_params(1, 4, 5)
    with pytest.raises(TypeError, match="float32 or float64"):
        call(case, params, make_h0(case.N, 4).half())
    with pytest.raises(TypeError, match="msg_w1 has dtype torch.float32 but h0 has torch.float64"):
        call(case, GNNParams(params[0].float(), *params[1:]), make_h0(case.N, 4))
    bad = Case("chain", [[0, 1, 2, 3], [1, 2, 3, 4]], [0, 5], [0, 1])
    with pytest.raises(TypeError, match="block_ptr must be an int64"):
        torch.ops.ghn_ext.propagate.default(*op_args(bad, params, make_h0(5, 4))[:1], bad.block_ptr.int(),
                                            *op_args(bad, params, make_h0(5, 4))[2:])


def test_error_shapes_and_T():
    case = HAND[2]
    params = make_params(1, 4, 5)
    with pytest.raises(ValueError, match="h0 must have shape"):
        call(case, params, make_h0(case.N, 4)[0])
    with pytest.raises(ValueError, match=r"gru_w_ih has shape \(1, 12, 3\), expected \(1, 12, 4\)"):
        call(case, GNNParams(*params[:4], params[4][:, :, :3], *params[5:]), make_h0(case.N, 4))
    with pytest.raises(ValueError, match="block_ptr must end at N"):
        call(case, params, make_h0(case.N + 1, 4))
    with pytest.raises(ValueError, match="T must be at least 1"):
        call(case, params, make_h0(case.N, 4), T=0)
    with pytest.raises(ValueError, match="T must be at least 1"):
        propagate(make_h0(case.N, 4), case.block_ptr, case.graph_block_ptr, case.schedule, params, 0)
    with pytest.raises(ValueError, match="unknown propagation scheme"):
        propagate(make_h0(case.N, 4), case.block_ptr, case.graph_block_ptr, case.schedule, params, 1, "x")


@pytest.mark.parametrize("T", [2 ** 61 + 1, 2 ** 62, 2 ** 63 - 1])
def test_error_T_whose_buffer_overflows(T):
    """Issue 29: 2*T*N wrapped around and the kernel wrote past a small buffer (a segfault)."""
    case = HAND[2]
    params = make_params(1, 4, 5)
    with pytest.raises(ValueError, match="more bytes than an int64 can count"):
        call(case, params, make_h0(case.N, 4), T=T)
    h, saved = call(case, params, make_h0(case.N, 4), T=1)
    s = case.schedule
    with pytest.raises(ValueError, match="more bytes than an int64 can count"):  # an 8-row saved and a huge T
        torch.ops.ghn_ext._propagate_backward.default(
            torch.ones_like(h), h, saved[:8], case.block_ptr, case.graph_block_ptr, s.order, s.in_ptr, s.in_src,
            s.out_ptr, s.out_dst, *params, T, True, True)


def test_error_tensor_on_the_meta_device():
    """Issue 29: one meta index tensor beside CPU tensors returned uninitialised memory."""
    case = HAND[2]
    params = make_params(1, 4, 5)
    args = list(op_args(case, params, make_h0(case.N, 4)))
    args[3] = args[3].to("meta")
    with pytest.raises(ValueError, match="order is on meta but h0 is on cpu"):
        torch.ops.ghn_ext.propagate.default(*args)
    with pytest.raises(ValueError, match="h0 is on meta"):  # all on meta but one: named as well
        torch.ops.ghn_ext.propagate.default(args[0].to("meta"), *args[1:])


def test_error_too_few_parameter_sets():
    case = HAND[7]  # 3 blocks
    with pytest.raises(ValueError, match="2 parameter sets for graphs of 3 blocks"):
        call(case, make_params(2, 4, 5), make_h0(case.N, 4))


def test_error_edge_leaving_block():
    case = HAND[6]
    s = case.schedule
    params, h0 = make_params(1, 4, 5), make_h0(case.N, 4)
    bad_src = s.in_src.clone()
    bad_src[0] = 4
    with pytest.raises(ValueError, match="leaves block"):
        torch.ops.ghn_ext.propagate.default(h0, case.block_ptr, case.graph_block_ptr, s.order, s.in_ptr, bad_src,
                                            s.out_ptr, s.out_dst, *params, 2, True, True)
    bad_order = s.order.clone()
    bad_order[0] = 4
    with pytest.raises(ValueError, match="is not a node of block"):
        torch.ops.ghn_ext.propagate.default(h0, case.block_ptr, case.graph_block_ptr, bad_order, s.in_ptr, s.in_src,
                                            s.out_ptr, s.out_dst, *params, 2, True, True)


def test_error_edge_index_out_of_range():
    case = HAND[6]
    s = case.schedule
    params, h0 = make_params(1, 4, 5), make_h0(case.N, 4)
    for value in (10 ** 6, -1):
        bad_dst = s.out_dst.clone()
        bad_dst[0] = value
        with pytest.raises(ValueError, match=f"edge 0 -> {value} leaves block 0"):
            torch.ops.ghn_ext.propagate.default(h0, case.block_ptr, case.graph_block_ptr, s.order, s.in_ptr,
                                                s.in_src, s.out_ptr, bad_dst, *params, 2, True, True)


def test_error_cycle():
    with pytest.raises(ValueError, match="graph 0 contains a cycle"):
        Case("cycle", [[0, 1, 2], [1, 2, 0]], [0, 3], [0, 1])


@pytest.mark.parametrize("impl", [propagate, propagate_reference], ids=["compiled", "reference"])
def test_error_empty_batch(impl):
    empty = Case("empty", [[], []], [0], [0])
    with pytest.raises(ValueError, match="empty batch"):
        impl(make_h0(0, 4), empty.block_ptr, empty.graph_block_ptr, empty.schedule, make_params(1, 4, 5), 1)


@pytest.mark.slow
def test_the_gpu_sanitizer_script_builds_its_cases_and_runs_on_the_cpu():
    """bench/gpu_sanitize_case.py runs only where a GPU is lent; on the CPU (CPU against CPU) it checks
    that its cases still build from the library's samplers and the ops accept them."""
    import subprocess
    import sys
    from pathlib import Path
    script = Path(__file__).resolve().parents[1] / "bench" / "gpu_sanitize_case.py"
    res = subprocess.run([sys.executable, str(script), "cpu"], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "all results match the CPU kernels" in res.stdout
