"""Sliced-kernel weight emission: the pure-PyTorch reference.

The hypernetwork gives every node one fixed-size block (Co, Ci, K, K). Each weight tensor a node needs
is cut out of its block (paper Sec. 3, appendix 7.2): spatially, a kh x kw window anchored at
(row, col) of the K x K kernel; along channels, the block is tiled when the weight has more channels
than the block and sliced when it has fewer. So entry (a, b, y, x) of a weight is
block[a % Co, b % Ci, row + y, col + x] * scale. Every weight lands in one flat buffer, one after
another, in the order given.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor


def emit_reference(blocks: Tensor, node_index: Sequence[int], shapes: Sequence[int],
                   anchors: Sequence[int], scales: Sequence[float]) -> Tensor:
    """Flat buffer of all weights.

    blocks: (N, Co, Ci, K, K); for target t: node_index[t] picks the block, shapes[4t:4t+4] is its
    (out, in, kh, kw) shape, anchors[2t:2t+2] the window's (row, col), scales[t] a constant factor.
    """
    check_emit_args(blocks, node_index, shapes, anchors, scales)
    _, co, ci, _, _ = blocks.shape
    pieces = []
    for t, n in enumerate(node_index):
        o, i, kh, kw = shapes[4 * t:4 * t + 4]
        r, c = anchors[2 * t:2 * t + 2]
        window = blocks[n, :, :, r:r + kh, c:c + kw]
        tiled = window.repeat(math.ceil(o / co), math.ceil(i / ci), 1, 1)[:o, :i]
        pieces.append((tiled * scales[t]).reshape(-1))
    if not pieces:
        return blocks.new_zeros(0)
    return torch.cat(pieces)


def check_emit_args(blocks: Tensor, node_index: Sequence[int], shapes: Sequence[int],
                    anchors: Sequence[int], scales: Sequence[float]) -> None:
    if blocks.dim() != 5 or blocks.shape[3] != blocks.shape[4]:
        raise ValueError(f"blocks must have shape (N, Co, Ci, K, K), got {tuple(blocks.shape)}")
    if not blocks.is_floating_point():
        raise TypeError(f"blocks must be floating point, got {blocks.dtype}")
    n_targets = len(node_index)
    if len(shapes) != 4 * n_targets or len(anchors) != 2 * n_targets or len(scales) != n_targets:
        raise ValueError(f"{n_targets} targets need {4 * n_targets} shape entries, {2 * n_targets} "
                         f"anchors and {n_targets} scales; got {len(shapes)}, {len(anchors)}, {len(scales)}")
    n, k = blocks.shape[0], blocks.shape[3]
    for t, node in enumerate(node_index):
        o, i, kh, kw = shapes[4 * t:4 * t + 4]
        r, c = anchors[2 * t:2 * t + 2]
        if not 0 <= node < n:
            raise IndexError(f"target {t}: node index {node} out of range [0, {n})")
        if min(o, i, kh, kw) < 1:
            raise ValueError(f"target {t}: shape {(o, i, kh, kw)} must be positive")
        if r < 0 or c < 0 or r + kh > k or c + kw > k:
            raise ValueError(f"target {t}: {kh}x{kw} window at ({r}, {c}) leaves the {k}x{k} block")


def numel_of(shapes: Sequence[int]) -> list[int]:
    return [math.prod(shapes[j:j + 4]) for j in range(0, len(shapes), 4)]
