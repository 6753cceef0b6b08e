"""One small case of every CUDA kernel of ghn_ext, for compute-sanitizer (run by bench/gpu_check.sh).

propagate forward + backward on CUDA: forward-backward and synchronous schemes, hidden 32 (the compiled
specialisation) and 4 (the generic path), float32 and float64 (float64 puts the gradient copies in global
memory), per-block parameter sets with the embedding hand-over; then emit_weights forward and backward. Each
result is compared with the CPU kernel, so a wrong result fails the run even where the sanitizer is silent.

    compute-sanitizer --tool memcheck python3 bench/gpu_sanitize_case.py
"""
from __future__ import annotations

import os
import sys

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "python_tests"))

from test_propagate_op import HAND, RANDOM, make_h0, make_params, op_args  # noqa: E402

import ghn_ext.ops  # noqa: E402,F401  (loads the compiled library)
from ghn_ext.ops import emit_weights  # noqa: E402


def propagate_case(case, D, Hm, fb, dtype):
    params = [p.detach().to(dtype) * D ** -0.5 for p in make_params(case.max_blocks, D, Hm)]
    h0 = make_h0(case.N, D).detach().to(dtype)
    args = op_args(case, params, h0, 2, fb, True)
    gpu = tuple(a.cuda() if isinstance(a, torch.Tensor) else a for a in args)
    h, saved = torch.ops.ghn_ext.propagate.default(*gpu)
    grad = torch.ones_like(h)
    grads = torch.ops.ghn_ext._propagate_backward.default(grad, h, saved, *gpu[1:])
    torch.cuda.synchronize()
    h_cpu, saved_cpu = torch.ops.ghn_ext.propagate.default(*args)
    want = torch.ops.ghn_ext._propagate_backward.default(grad.cpu(), h_cpu, saved_cpu, *args[1:])
    for a, b in zip([h, saved, *grads], [h_cpu, saved_cpu, *want]):
        torch.testing.assert_close(a.cpu(), b, rtol=1e-3, atol=1e-4)


def main() -> None:
    assert torch.cuda.is_available(), "no CUDA device"
    for case, D, Hm in [(HAND[8], 4, 5), (RANDOM[0], 32, 32)]:
        for fb in (True, False):
            for dtype in (torch.float32, torch.float64):
                propagate_case(case, D, Hm, fb, dtype)
    blocks = torch.randn(3, 4, 4, 3, 3, generator=torch.Generator().manual_seed(0))
    lists = ([0, 1, 2, 2], [4, 4, 3, 3, 8, 2, 1, 1, 5, 9, 2, 2, 1, 4, 1, 1], [0, 0, 0, 0, 1, 1, 2, 0],
             [1.0, 0.5, 2.0, 0.25])
    out = emit_weights(blocks.cuda(), *lists)
    g = torch.randn(out.shape, generator=torch.Generator().manual_seed(1)).cuda()
    grad_blocks = torch.ops.ghn_ext._emit_weights_backward.default(g, *lists, list(blocks.shape))
    torch.cuda.synchronize()
    assert torch.equal(out.cpu(), emit_weights(blocks, *lists))
    assert torch.equal(grad_blocks.cpu(),
                       torch.ops.ghn_ext._emit_weights_backward.default(g.cpu(), *lists, list(blocks.shape)))
    print("gpu_sanitize_case: all results match the CPU kernels")


if __name__ == "__main__":
    main()
