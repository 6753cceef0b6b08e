"""Tests of the CUDA kernels of ghn_ext::propagate / ghn_ext::_propagate_backward (csrc/cuda/propagate_cuda.cu).

On a GPU: the CUDA op against the compiled CPU kernel (outputs, `saved`, every gradient) and against the
pure-PyTorch reference, on the hand-made graphs and random architecture batches of test_propagate_op.py,
for both schemes, with the mean-embedding hand-over on and off, shared or per-block parameters, float32 and
float64, hidden sizes 32 (the compiled specialisation) and small odd ones; gradcheck in float64,
torch.library.opcheck, inputs on mismatched devices, and a GHN training step on CUDA. These tests skip
without a GPU (test_propagate_cuda_emulated.py runs the same kernel code on the CPU).

The argument checks are shared by both devices; the one that the CUDA kernel relies on (each block's order
lists every node once) is tested here on every available device.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import ghn_ext.ops._extension as ext
from ghn_ext.ops import HAS_EXTENSION
from ghn_ext.ops.propagate import GNNParams, propagate, propagate_reference

from test_propagate_op import HAND, RANDOM, assert_close, make_h0, make_params, op_args

requires_ext = pytest.mark.skipif(
    not (HAS_EXTENSION and ext.has_kernel("propagate", "cpu")),
    reason=f"compiled extension ghn_ext._C not built ({ext.IMPORT_ERROR})",
)
requires_cuda = pytest.mark.skipif(
    not (HAS_EXTENSION and torch.cuda.is_available() and ext.has_kernel("propagate", "cuda")),
    reason="needs a CUDA device and the compiled extension with CUDA kernels",
)
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def cuda_args(case, params, h0, T, fb, pe):
    return tuple(a.detach().cuda() if isinstance(a, torch.Tensor) else a for a in op_args(case, params, h0, T, fb, pe))


def compare_with_cpu(case, D, Hm, P, T, fb, pe, dtype, scale=None):
    """Forward (h and saved) and backward of the CUDA op equal the CPU kernel's within rounding."""
    params = GNNParams(*[p.detach().to(dtype) for p in make_params(P, D, Hm, scale=scale or min(0.5, D ** -0.5))])
    h0 = make_h0(case.N, D).detach().to(dtype)
    args = op_args(case, params, h0, T, fb, pe)
    h_cpu, saved_cpu = torch.ops.ghn_ext.propagate.default(*args)
    h_gpu, saved_gpu = torch.ops.ghn_ext.propagate.default(*cuda_args(case, params, h0, T, fb, pe))
    assert h_gpu.is_cuda and saved_gpu.is_cuda and h_gpu.dtype == dtype
    assert_close(h_gpu.cpu(), h_cpu, dtype)
    assert_close(saved_gpu.cpu(), saved_cpu, dtype)
    g = torch.randn(h_cpu.shape, generator=torch.Generator().manual_seed(5), dtype=dtype)
    want = torch.ops.ghn_ext._propagate_backward.default(g, h_cpu, saved_cpu, *args[1:])
    got = torch.ops.ghn_ext._propagate_backward.default(g.cuda(), h_gpu, saved_gpu, *cuda_args(case, params, h0, T, fb, pe)[1:])
    assert len(got) == 9
    for name, a, b in zip(["h0", *GNNParams._fields], got, want):
        assert a.is_cuda and a.shape == b.shape, name
        if dtype == torch.float64:
            torch.testing.assert_close(a.cpu(), b, rtol=1e-9, atol=1e-11, msg=lambda m: f"{name}: {m}")
        else:
            torch.testing.assert_close(a.cpu(), b, rtol=1e-3, atol=1e-4, msg=lambda m: f"{name}: {m}")


@requires_cuda
@pytest.mark.parametrize("case", HAND, ids=repr)
@pytest.mark.parametrize("fb", [True, False], ids=["fb", "sync"])
@pytest.mark.parametrize("pe", [True, False], ids=["pass", "nopass"])
@pytest.mark.parametrize("shared", [True, False], ids=["shared", "per_block"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_cuda_matches_cpu_hand_made(case, fb, pe, shared, dtype):
    compare_with_cpu(case, 4, 5, 1 if shared else case.max_blocks + 1, 2, fb, pe, dtype)


@requires_cuda
@pytest.mark.parametrize("case", [HAND[4], HAND[7], HAND[8], RANDOM[0]], ids=repr)
@pytest.mark.parametrize("sizes", [(32, 32), (3, 2), (32, 7), (40, 33)], ids=str)
@pytest.mark.parametrize("fb", [True, False], ids=["fb", "sync"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_cuda_matches_cpu_hidden_sizes(case, sizes, fb, dtype):
    D, Hm = sizes
    compare_with_cpu(case, D, Hm, case.max_blocks, 3, fb, True, dtype)


@requires_cuda
@pytest.mark.parametrize("case", RANDOM, ids=repr)
@pytest.mark.parametrize("fb", [True, False], ids=["fb", "sync"])
@pytest.mark.parametrize("shared", [True, False], ids=["shared", "per_block"])
def test_cuda_matches_cpu_random_architectures(case, fb, shared):
    compare_with_cpu(case, 32, 32, 1 if shared else case.max_blocks, 2, fb, True, torch.float32)


@requires_cuda
@pytest.mark.parametrize("case", [HAND[3], HAND[8], RANDOM[0]], ids=repr)
@pytest.mark.parametrize("scheme", ["fb", "sync"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_cuda_wrapper_matches_reference(case, scheme, dtype):
    """Through the public wrapper and autograd, against propagate_reference on the same GPU."""
    D = 32 if case is RANDOM[0] else 4
    params = GNNParams(*[p.detach().to(dtype).cuda().requires_grad_() for p in make_params(case.max_blocks, D, 5 if D == 4 else 32, scale=min(0.5, D ** -0.5))])
    h0 = make_h0(case.N, D).detach().to(dtype).cuda().requires_grad_()
    args = (case.block_ptr, case.graph_block_ptr, case.schedule)  # index tensors on the CPU: the wrapper moves them
    out = propagate(h0, *args, params, 2, scheme, True)
    ref = propagate_reference(h0, *args, params, 2, scheme, True)
    assert out.is_cuda
    assert_close(out, ref, dtype)
    w = torch.randn(out.shape, generator=torch.Generator().manual_seed(2), dtype=dtype).cuda()
    got = torch.autograd.grad((out * w).sum(), [h0, *params])
    want = torch.autograd.grad((ref * w).sum(), [h0, *params])
    for a, b in zip(got, want):
        if dtype == torch.float64:
            assert_close(a, b, dtype)
        else:
            torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-4)


@requires_cuda
def test_cuda_is_deterministic():
    case = RANDOM[0]
    params = make_params(1, 32, 32, torch.float32, scale=32 ** -0.5)
    h0 = make_h0(case.N, 32, torch.float32)
    args = cuda_args(case, params, h0, 2, True, True)
    h1, s1 = torch.ops.ghn_ext.propagate.default(*args)
    h2, s2 = torch.ops.ghn_ext.propagate.default(*args)
    assert torch.equal(h1, h2) and torch.equal(s1, s2)
    g = torch.randn_like(h1)
    a = torch.ops.ghn_ext._propagate_backward.default(g, h1, s1, *args[1:])
    b = torch.ops.ghn_ext._propagate_backward.default(g, h1, s1, *args[1:])
    assert all(torch.equal(x, y) for x, y in zip(a, b))


@requires_cuda
@pytest.mark.parametrize("case", [HAND[0], HAND[4], HAND[7], HAND[8]], ids=repr)
@pytest.mark.parametrize("scheme", ["fb", "sync"])
def test_cuda_gradcheck(case, scheme):
    params = [p.detach().cuda().requires_grad_() for p in make_params(case.max_blocks, 3, 4)]
    h0 = make_h0(case.N, 3).detach().cuda().requires_grad_()

    def f(h0, *params):
        return propagate(h0, case.block_ptr, case.graph_block_ptr, case.schedule, GNNParams(*params), 2,
                         scheme, True)

    assert torch.autograd.gradcheck(f, (h0, *params), eps=1e-6, atol=1e-7)


@requires_cuda
@pytest.mark.parametrize("case", [HAND[2], HAND[7], HAND[8]], ids=repr)
@pytest.mark.parametrize("fb", [True, False], ids=["fb", "sync"])
def test_cuda_opcheck(case, fb):
    params = [p.detach().cuda().requires_grad_() for p in make_params(1 if fb else case.max_blocks, 3, 4)]
    h0 = make_h0(case.N, 3).detach().cuda().requires_grad_()
    s = case.schedule
    args = (h0, *(t.cuda() for t in (case.block_ptr, case.graph_block_ptr, s.order, s.in_ptr, s.in_src,
                                     s.out_ptr, s.out_dst)), *params, 2, fb, True)
    torch.library.opcheck(torch.ops.ghn_ext.propagate.default, args)


@requires_cuda
def test_cuda_empty_graphs_and_single_nodes():
    case = HAND[9]  # three one-node blocks in one graph
    compare_with_cpu(case, 4, 5, 3, 2, True, True, torch.float64)
    compare_with_cpu(case, 4, 5, 1, 1, False, False, torch.float64)


@requires_cuda
@pytest.mark.parametrize("which,message", [
    ("h0", "msg_w1 is on cuda:0 but h0 is on cpu"),
    ("block_ptr", "block_ptr is on cpu but h0 is on cuda:0"),
    ("in_src", "in_src is on cpu but h0 is on cuda:0"),
    ("msg_w2", "msg_w2 is on cpu but h0 is on cuda:0"),
])
def test_cuda_mismatched_devices_raise(which, message):
    case = HAND[6]
    args = list(cuda_args(case, make_params(1, 4, 5), make_h0(case.N, 4), 2, True, True))
    position = {"h0": 0, "block_ptr": 1, "in_src": 5, "msg_w2": 10}[which]
    args[position] = args[position].cpu()
    with pytest.raises(ValueError, match=f"propagate: {message}"):
        torch.ops.ghn_ext.propagate.default(*args)


@requires_cuda
def test_cuda_backward_rejects_saved_on_another_device():
    case = HAND[6]
    args = cuda_args(case, make_params(1, 4, 5), make_h0(case.N, 4), 2, True, True)
    h, saved = torch.ops.ghn_ext.propagate.default(*args)
    with pytest.raises(ValueError, match=r"h's device \(cuda:0\), got \(\d+, 4\), torch.float64 on cpu"):
        torch.ops.ghn_ext._propagate_backward.default(torch.ones_like(h), h, saved.cpu(), *args[1:])


@requires_ext
@pytest.mark.parametrize("device", DEVICES)
def test_error_order_repeats_a_node(device):
    case = HAND[2]
    params = GNNParams(*[p.detach().to(device) for p in make_params(1, 4, 5)])
    s = case.schedule
    order = s.order.clone()
    order[1] = order[0]
    args = [make_h0(case.N, 4).detach(), case.block_ptr, case.graph_block_ptr, order, s.in_ptr, s.in_src,
            s.out_ptr, s.out_dst]
    with pytest.raises(ValueError, match=r"order\[1\] = 0 repeats a node of block 0"):
        torch.ops.ghn_ext.propagate.default(*(t.to(device) for t in args), *params, 2, True, True)


@requires_cuda
def test_ghn_training_step_on_cuda_matches_cpu():
    """A GHN (hidden 32) forward and backward on CUDA: the compiled propagation and emission kernels
    there give the CPU kernels' loss and gradients."""
    from test_ghn import cls_arch, images, make_ghn
    from ghn_ext.nets import Network

    archs = [cls_arch(1, num_nodes=5), cls_arch(2, num_nodes=7, num_blocks=3)]
    x, y = images(8), torch.arange(8) % 10

    def step(device):
        ghn = make_ghn(seed=3, hidden=32, message_hidden=32).to(device)
        loss = sum(F.cross_entropy(Network(g).to(device)(x.to(device), w), y.to(device))
                   for g, w in zip(archs, ghn(archs)))
        loss.backward()
        return loss.detach().cpu(), {n: p.grad.cpu() for n, p in ghn.named_parameters()}

    # full float32 on the GPU: cuDNN convolutions default to TF32, about 1e-3 relative
    tf32 = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        loss_gpu, grads_gpu = step("cuda")
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = tf32
    loss_cpu, grads_cpu = step("cpu")
    torch.testing.assert_close(loss_gpu, loss_cpu, rtol=1e-4, atol=1e-5)
    for name, g in grads_cpu.items():
        scale = g.abs().max().item()
        torch.testing.assert_close(grads_gpu[name], g, rtol=1e-3, atol=1e-3 * scale + 1e-8,
                                   msg=lambda m: f"gradient of {name}: {m}")
