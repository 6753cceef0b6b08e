"""Tests of ghn_ext::emit_edge_weights / _emit_edge_weights_backward (edge-mode emission): the compiled
CPU kernel against the reference ``emit_edges_reference``: same bits forward, matching gradients,
gradcheck, opcheck, and the same errors with the same text. Skipped when the library is not built."""
from __future__ import annotations

import random

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ghn_ext.ops._extension as ext
from ghn_ext.ops import HAS_EXTENSION, emit_edge_weights, emit_edges_reference, emit_weights

pytestmark = pytest.mark.skipif(not (HAS_EXTENSION and ext.has_kernel("emit_edge_weights", "cpu")),
                                reason=f"compiled extension ghn_ext._C not built ({ext.IMPORT_ERROR})")


def op(*args):
    return torch.ops.ghn_ext.emit_edge_weights.default(*args)


class Sample:
    """Block shape (N, Co, Ci, K) and targets [(out, kh, kw, (row, col), scale, [(block, channels)])]."""

    def __init__(self, name, shape, targets, seed=0):
        self.name, self.block_shape, self.targets, self.seed = name, shape, targets, seed

    def blocks(self, dtype=torch.float64, requires_grad=False):
        g = torch.Generator().manual_seed(self.seed)
        return torch.randn(self.block_shape, generator=g, dtype=torch.float64).to(dtype).requires_grad_(requires_grad)

    def lists(self):
        ptr, pb, pc, shapes, anchors, scales = [0], [], [], [], [], []
        for o, kh, kw, anchor, scale, pieces in self.targets:
            pb += [b for b, _ in pieces]
            pc += [c for _, c in pieces]
            ptr.append(len(pb))
            shapes += [o, sum(c for _, c in pieces), kh, kw]
            anchors += list(anchor)
            scales.append(scale)
        return ptr, pb, pc, shapes, anchors, scales

    def __repr__(self):
        return self.name


def ghn_like():
    """The bottleneck targets the GHN emits for two small anytime networks (EdgePlan)."""
    from ghn_ext.models.ghn import EdgePlan
    from ghn_ext.spaces import anytime
    graphs = [anytime.sample_architecture(random.Random(s), channels=4, random_nodes=True) for s in (0, 1)]
    plan = EdgePlan.build(graphs, [0, len(graphs[0])], (3, 32, 32))
    targets = []
    for t, scale in enumerate(plan.scales):
        span = range(plan.piece_ptr[t], plan.piece_ptr[t + 1])
        targets.append((plan.shapes[4 * t], 1, 1, (0, 0), scale, [(p, plan.piece_channels[p]) for p in span]))
    return Sample("ghn_like", (len(plan.edges), 8, 8, 1, 1), targets)


SAMPLES = [
    Sample("one_piece", (2, 3, 2, 3, 3), [(2, 3, 3, (0, 0), 0.5, [(1, 2)])]),
    Sample("three_edges_tiled", (4, 3, 2, 3, 3), [(5, 1, 1, (2, 1), 0.5, [(2, 3), (0, 1), (3, 4)])], seed=1),
    Sample("same_block_twice", (4, 3, 2, 3, 3), [(7, 2, 2, (1, 1), -1.0, [(0, 1), (0, 5)]),
                                                 (2, 3, 3, (0, 0), 2.0, [(1, 2), (3, 3)])], seed=2),
    Sample("no_targets", (2, 2, 2, 1, 1), []),
    ghn_like(),
]


@pytest.mark.parametrize("sample", SAMPLES, ids=repr)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_forward_same_bits_as_the_reference(sample, dtype):
    blocks = sample.blocks(dtype)
    got = op(blocks, *sample.lists())
    want = emit_edges_reference(blocks, *sample.lists())
    assert got.dtype == dtype and got.shape == want.shape
    assert torch.equal(got, want)


@pytest.mark.parametrize("sample", [s for s in SAMPLES if s.targets], ids=repr)
def test_gradient_matches_the_reference(sample):
    blocks = sample.blocks(requires_grad=True)
    g_out = torch.randn(sum(o * i * kh * kw for o, i, kh, kw in zip(*[iter(sample.lists()[3])] * 4)),
                        dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    (op(blocks, *sample.lists()) * g_out).sum().backward()
    got, blocks.grad = blocks.grad, None
    (emit_edges_reference(blocks, *sample.lists()) * g_out).sum().backward()
    torch.testing.assert_close(got, blocks.grad, rtol=1e-12, atol=1e-12)


@pytest.mark.slow
@pytest.mark.parametrize("sample", [s for s in SAMPLES if s.targets], ids=repr)
def test_gradcheck_and_gradgradcheck(sample):
    blocks = sample.blocks(requires_grad=True)
    fn = lambda b: op(b, *sample.lists())  # noqa: E731
    assert torch.autograd.gradcheck(fn, (blocks,))
    assert torch.autograd.gradgradcheck(fn, (blocks,))


@pytest.mark.parametrize("sample", SAMPLES, ids=repr)
def test_opcheck(sample):
    torch.library.opcheck(torch.ops.ghn_ext.emit_edge_weights.default,
                          (sample.blocks(torch.float32, requires_grad=True), *sample.lists()))


def test_one_piece_per_target_equals_emit_weights():
    s = SAMPLES[2]
    blocks = s.blocks(torch.float32)
    ptr, pb, pc, shapes, anchors, scales = Sample("split", s.block_shape, [
        (o, kh, kw, a, sc, [p]) for o, kh, kw, a, sc, pieces in s.targets for p in pieces]).lists()
    assert torch.equal(op(blocks, ptr, pb, pc, shapes, anchors, scales),
                       emit_weights(blocks, pb, shapes, anchors, scales))


def test_wrapper_uses_the_kernel_unless_the_reference_is_forced(monkeypatch):
    s = SAMPLES[1]
    calls = []
    real = torch.ops.ghn_ext.emit_edge_weights.default
    monkeypatch.setattr("ghn_ext.ops.emit.emit_edges_reference",
                        lambda *a: calls.append("reference") or emit_edges_reference(*a))
    out = emit_edge_weights(s.blocks(), *s.lists())
    assert calls == [] and torch.equal(out, real(s.blocks(), *s.lists()))
    monkeypatch.setenv("GHN_EXT_REFERENCE", "1")
    emit_edge_weights(s.blocks(), *s.lists())
    assert calls == ["reference"]


BAD = [  # (which list to change, new value) against SAMPLES[2]'s lists
    (0, [0, 4, 4]), (0, [0, 2]), (0, [1, 2, 4]), (2, [1, 5, 2]), (2, [1, 5, 2, 0]), (2, [1, 5, 2, 2]),
    (1, [0, 0, 9, 3]), (1, [7, 0, 1, 3]), (4, [1, 1, 2, 2]), (3, [7, 6, 2, 2, 2, 5]), (5, [-1.0, 2.0, 3.0]),
]


@pytest.mark.parametrize("which,value", BAD)
def test_errors_match_the_reference(which, value):
    args = [list(x) for x in SAMPLES[2].lists()]
    args[which] = value
    blocks = SAMPLES[2].blocks(torch.float32)
    with pytest.raises((ValueError, IndexError)) as want:
        emit_edges_reference(blocks, *args)
    with pytest.raises(type(want.value)) as got:
        op(blocks, *args)
    assert str(want.value) in str(got.value)


def test_backward_rejects_a_wrong_grad():
    s = SAMPLES[1]
    with pytest.raises(ValueError, match=r"grad must have shape \(40,\)"):
        torch.ops.ghn_ext._emit_edge_weights_backward.default(torch.zeros(3, dtype=torch.float64), *s.lists(),
                                                              list(s.block_shape))


def test_ghn_weights_on_the_kernel_equal_the_reference(monkeypatch):
    from ghn_ext.models.ghn import GHNConfig, GraphHyperNetwork
    from ghn_ext.spaces import anytime
    torch.manual_seed(0)
    ghn = GraphHyperNetwork(GHNConfig(space="anytime", tile_channels=8, T=1))
    g = anytime.sample_architecture(random.Random(0), channels=4, random_nodes=True)
    with torch.no_grad():
        kernel = ghn(g)
        monkeypatch.setenv("GHN_EXT_REFERENCE", "1")
        reference = ghn(g)
    for v in reference:
        for name in reference[v]:
            torch.testing.assert_close(kernel[v][name], reference[v][name], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("threads", [2, 3])
def test_parallel_chunks_match_the_reference(threads):
    """Enough work for the CPU kernels to split rows and slabs across threads, chunk borders falling
    inside pieces; the backward is the same whatever the thread count."""
    rng = random.Random(threads)
    targets = [(rng.randint(1, 40), kh, kh, (0, 0), rng.uniform(-2, 2),
                [(rng.randrange(6), rng.randint(1, 20)) for _ in range(rng.randint(1, 4))])
               for kh in [rng.choice((1, 3)) for _ in range(30)]]
    sample = Sample("parallel", (6, 4, 3, 3, 3), targets, seed=threads)
    blocks = sample.blocks(torch.float32)
    out = op(blocks, *sample.lists())
    assert out.numel() > 1 << 15
    g = torch.randn(out.numel(), generator=torch.Generator().manual_seed(3))
    backward = torch.ops.ghn_ext._emit_edge_weights_backward.default
    before = torch.get_num_threads()
    try:
        results = []
        for n in (1, threads):
            torch.set_num_threads(n)
            results.append((op(blocks, *sample.lists()), backward(g, *sample.lists(), list(sample.block_shape))))
    finally:
        torch.set_num_threads(before)
    assert torch.equal(results[0][0], emit_edges_reference(blocks, *sample.lists()))
    assert torch.equal(results[1][0], results[0][0]) and torch.equal(results[1][1], results[0][1])


def test_non_contiguous_blocks():
    s = SAMPLES[2]
    base = s.blocks()
    view = base.transpose(3, 4).contiguous().transpose(3, 4)
    assert not view.is_contiguous()
    assert torch.equal(op(view, *s.lists()), emit_edges_reference(base, *s.lists()))


@st.composite
def edge_inputs(draw):
    n, co, ci, k = draw(st.integers(1, 4)), draw(st.integers(1, 4)), draw(st.integers(1, 4)), draw(st.integers(1, 5))
    targets = []
    for _ in range(draw(st.integers(0, 5))):
        kh, kw = draw(st.integers(1, k)), draw(st.integers(1, k))
        pieces = [(draw(st.integers(0, n - 1)), draw(st.integers(1, 3 * ci + 1)))
                  for _ in range(draw(st.integers(1, 4)))]
        targets.append((draw(st.integers(1, 3 * co + 1)), kh, kw,
                        (draw(st.integers(0, k - kh)), draw(st.integers(0, k - kw))),
                        draw(st.floats(-4, 4, allow_nan=False, width=32)), pieces))
    return Sample("fuzz", (n, co, ci, k, k), targets, seed=draw(st.integers(0, 2 ** 16)))


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(edge_inputs(), st.sampled_from([torch.float32, torch.float64]))
def test_fuzz_matches_the_reference(sample, dtype):
    blocks = sample.blocks(dtype)
    want = emit_edges_reference(blocks, *sample.lists())
    assert torch.equal(op(blocks, *sample.lists()), want)
    if not sample.targets:
        return
    g = torch.randn(want.numel(), dtype=dtype, generator=torch.Generator().manual_seed(sample.seed))
    got = torch.ops.ghn_ext._emit_edge_weights_backward.default(g, *sample.lists(), list(sample.block_shape))
    b = blocks.clone().requires_grad_()
    (emit_edges_reference(b, *sample.lists()) * g).sum().backward()
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    torch.testing.assert_close(got, b.grad, rtol=tol, atol=tol)


# ------------------------------------------------------------------------------------------ CUDA
requires_cuda = pytest.mark.skipif(
    not (torch.cuda.is_available() and ext.has_kernel("emit_edge_weights", "cuda")),
    reason="needs a CUDA device and the compiled extension with CUDA kernels")


@requires_cuda
@pytest.mark.parametrize("sample", [s for s in SAMPLES if s.targets], ids=repr)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cuda_same_bits_as_cpu(sample, dtype):
    blocks = sample.blocks(dtype, requires_grad=True)
    blocks_cuda = blocks.detach().cuda().requires_grad_()
    out, out_cuda = op(blocks, *sample.lists()), op(blocks_cuda, *sample.lists())
    assert torch.equal(out_cuda.cpu(), out)
    g = torch.randn_like(out)
    out.backward(g)
    out_cuda.backward(g.cuda())
    assert torch.equal(blocks_cuda.grad.cpu(), blocks.grad)  # same summation order, explicit rounding


@requires_cuda
def test_cuda_opcheck_and_gradcheck():
    s = SAMPLES[2]
    blocks = s.blocks(requires_grad=True).cuda().detach().requires_grad_()
    torch.library.opcheck(torch.ops.ghn_ext.emit_edge_weights.default, (blocks, *s.lists()))
    assert torch.autograd.gradcheck(lambda b: op(b, *s.lists()), (blocks,))
