"""One small case of every CUDA kernel of ghn_ext, for compute-sanitizer (run by bench/gpu_check.sh).

propagate forward + backward on CUDA: forward-backward and synchronous schemes, hidden 32 (the compiled
specialisation) and 4 (the generic path), float32 and float64 (float64 puts the gradient copies in global
memory), per-block parameter sets with the embedding hand-over; then emit_weights forward and backward. Each
result is compared with the CPU kernel, so a wrong result fails the run even where the sanitizer is silent.

    compute-sanitizer --tool memcheck python3 bench/gpu_sanitize_case.py

The cases are built from ghn_ext's own samplers (nothing of the test suite is imported).
"""
from __future__ import annotations

import random
import sys

import torch

import ghn_ext.ops  # noqa: F401  (loads the compiled library)
from ghn_ext.core.graph import GraphBatch
from ghn_ext.ops import emit_weights
from ghn_ext.ops.schedule import dag_schedule
from ghn_ext.spaces import classification, nb201


def batch(archs):
    """The propagate op's index arguments for a batch of architectures, and its node count and blocks."""
    b = GraphBatch.from_graphs(archs)
    s = dag_schedule(b.edge_index[:, b.block_edge_mask], b.block_ptr, b.num_nodes)
    index = (b.block_ptr, b.graph_block_ptr, s.order, s.in_ptr, s.in_src, s.out_ptr, s.out_dst)
    return index, b.num_nodes, max(g.num_blocks for g in archs)


CASES = [batch([nb201.sample_architecture(random.Random(s)) for s in range(3)]),  # unequal, small blocks
         batch([classification.sample_architecture(random.Random(s), 5 + s, 2 + s % 2, 8) for s in range(4)])]


def op_args(case, D, Hm, fb, dtype):
    index, n, blocks = case
    g = torch.Generator().manual_seed(0)
    shapes = [(blocks, Hm, D), (blocks, Hm), (blocks, D, Hm), (blocks, D), (blocks, 3 * D, D), (blocks, 3 * D, D),
              (blocks, 3 * D), (blocks, 3 * D)]
    params = [torch.randn(sh, generator=g, dtype=dtype) * D ** -0.5 for sh in shapes]
    h0 = torch.randn(n, D, generator=g, dtype=dtype)
    return (h0, *index, *params, 2, fb, True)


def propagate_case(case, D, Hm, fb, dtype, device):
    args = op_args(case, D, Hm, fb, dtype)
    dev = tuple(a.to(device) if isinstance(a, torch.Tensor) else a for a in args)
    h, saved = torch.ops.ghn_ext.propagate.default(*dev)
    grad = torch.ones_like(h)
    grads = torch.ops.ghn_ext._propagate_backward.default(grad, h, saved, *dev[1:])
    if device.type == "cuda":
        torch.cuda.synchronize()
    h_cpu, saved_cpu = torch.ops.ghn_ext.propagate.default(*args)
    want = torch.ops.ghn_ext._propagate_backward.default(grad.cpu(), h_cpu, saved_cpu, *args[1:])
    for a, b in zip([h, saved, *grads], [h_cpu, saved_cpu, *want]):
        torch.testing.assert_close(a.cpu(), b, rtol=1e-3, atol=1e-4)


def main(device: torch.device) -> None:
    for case, D, Hm in [(CASES[0], 4, 5), (CASES[1], 32, 32)]:
        for fb in (True, False):
            for dtype in (torch.float32, torch.float64):
                propagate_case(case, D, Hm, fb, dtype, device)
    blocks = torch.randn(3, 4, 4, 3, 3, generator=torch.Generator().manual_seed(0))
    lists = ([0, 1, 2, 2], [4, 4, 3, 3, 8, 2, 1, 1, 5, 9, 2, 2, 1, 4, 1, 1], [0, 0, 0, 0, 1, 1, 2, 0],
             [1.0, 0.5, 2.0, 0.25])
    out = emit_weights(blocks.to(device), *lists)
    g = torch.randn(out.shape, generator=torch.Generator().manual_seed(1)).to(device)
    grad_blocks = torch.ops.ghn_ext._emit_weights_backward.default(g, *lists, list(blocks.shape))
    if device.type == "cuda":
        torch.cuda.synchronize()
    assert torch.equal(out.cpu(), emit_weights(blocks, *lists))
    assert torch.equal(grad_blocks.cpu(),
                       torch.ops.ghn_ext._emit_weights_backward.default(g.cpu(), *lists, list(blocks.shape)))
    print("gpu_sanitize_case: all results match the CPU kernels")


if __name__ == "__main__":
    # cuda unless told (`cpu` runs the same cases CPU against CPU: a check of this script itself)
    main(torch.device(sys.argv[1] if len(sys.argv) > 1 else "cuda"))
