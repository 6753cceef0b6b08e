"""Sliced-kernel weight emission: the pure-PyTorch reference.

The hypernetwork gives every node one fixed-size block (Co, Ci, K, K). Each weight tensor a node needs
is cut out of its block (paper Sec. 3, appendix 7.2): spatially, a kh x kw window anchored at
(row, col) of the K x K kernel; along channels, the block is tiled when the weight has more channels
than the block and sliced when it has fewer. So entry (a, b, y, x) of a weight is
block[a % Co, b % Ci, row + y, col + x] * scale. Every weight lands in one flat buffer, one after
another, in the order given.

:func:`emit_weights` is the public op: it calls the compiled ``torch.ops.ghn_ext.emit_weights``
(C++/CUDA kernels in ``csrc/*/emit_*``; differentiable, its backward is the separate op
``ghn_ext::_emit_weights_backward``, itself differentiable) when the extension is built, and
:func:`emit_reference`, the specification, otherwise (or when ``GHN_EXT_REFERENCE=1``). Both raise
the same errors with the same text (see :func:`check_emit_args`).

Edge mode (anytime space, appendix 7.2): a weight can instead be assembled from several blocks, one
per incoming edge of its node, laid side by side along its input channels, so its size follows the
node's number of inputs. :func:`emit_edges_reference` is its specification, :func:`emit_edge_weights`
the op (compiled ``torch.ops.ghn_ext.emit_edge_weights``, CPU and CUDA kernels).
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
from torch import Tensor

from ghn_ext.ops._extension import HAS_EXTENSION, has_kernel, use_extension

__all__ = ["check_emit_args", "check_emit_edges_args", "emit_edge_weights", "emit_edges_reference",
           "emit_reference", "emit_weights", "numel_of"]


INT64_MAX = 2 ** 63 - 1


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
    if n_targets and (blocks.shape[1] < 1 or blocks.shape[2] < 1):
        raise ValueError(f"blocks of shape {tuple(blocks.shape)} have no channels to emit weights from")
    n, k = blocks.shape[0], blocks.shape[3]
    total = 0
    for t, node in enumerate(node_index):
        o, i, kh, kw = shapes[4 * t:4 * t + 4]
        r, c = anchors[2 * t:2 * t + 2]
        if not 0 <= node < n:
            raise IndexError(f"target {t}: node index {node} out of range [0, {n})")
        if min(o, i, kh, kw) < 1:
            raise ValueError(f"target {t}: shape {(o, i, kh, kw)} must be positive")
        if r < 0 or c < 0 or r + kh > k or c + kw > k:
            raise ValueError(f"target {t}: {kh}x{kw} window at ({r}, {c}) leaves the {k}x{k} block")
        total += o * i * kh * kw
        if total > INT64_MAX:  # as the kernels count: a buffer no int64 can size
            raise ValueError(f"target {t}: shape {(o, i, kh, kw)} makes the emitted buffer too large")


def emit_edges_reference(blocks: Tensor, piece_ptr: Sequence[int], piece_block: Sequence[int],
                         piece_channels: Sequence[int], shapes: Sequence[int], anchors: Sequence[int],
                         scales: Sequence[float]) -> Tensor:
    """Flat buffer of weights assembled from edge blocks (edge mode).

    Target t is made of pieces piece_ptr[t]:piece_ptr[t+1], in order along its input channels: piece p
    covers piece_channels[p] of them and is cut from block piece_block[p] exactly as a whole weight is
    in :func:`emit_reference` (window at anchors[2t:2t+2], tiling, scales[t]), so input channel b of
    the piece reads block channel b % Ci. The pieces' channels add up to the target's input channels
    shapes[4t+1]. With one piece per target this is :func:`emit_reference`.
    """
    check_emit_edges_args(blocks, piece_ptr, piece_block, piece_channels, shapes, anchors, scales)
    _, co, ci, _, _ = blocks.shape
    pieces = []
    for t in range(len(scales)):
        o, _, kh, kw = shapes[4 * t:4 * t + 4]
        r, c = anchors[2 * t:2 * t + 2]
        parts = []
        for p in range(piece_ptr[t], piece_ptr[t + 1]):
            window = blocks[piece_block[p], :, :, r:r + kh, c:c + kw]
            parts.append(window.repeat(math.ceil(o / co), math.ceil(piece_channels[p] / ci), 1, 1)
                         [:o, :piece_channels[p]])
        pieces.append((torch.cat(parts, dim=1) * scales[t]).reshape(-1))
    if not pieces:
        return blocks.new_zeros(0)
    return torch.cat(pieces)


def check_emit_edges_args(blocks: Tensor, piece_ptr: Sequence[int], piece_block: Sequence[int],
                          piece_channels: Sequence[int], shapes: Sequence[int], anchors: Sequence[int],
                          scales: Sequence[float]) -> None:
    n_targets = len(scales)
    if len(piece_ptr) != n_targets + 1 or piece_ptr[0] != 0 or piece_ptr[-1] != len(piece_block):
        raise ValueError(f"piece_ptr must hold {n_targets + 1} offsets from 0 to the {len(piece_block)} "
                         f"pieces, got {list(piece_ptr)}")
    if len(piece_channels) != len(piece_block):
        raise ValueError(f"{len(piece_block)} pieces need as many channel counts, got {len(piece_channels)}")
    for t in range(n_targets):
        if piece_ptr[t + 1] <= piece_ptr[t]:
            raise ValueError(f"target {t}: needs at least one piece (offsets {piece_ptr[t]}, {piece_ptr[t + 1]})")
    # the shared checks, with each target's first block standing for its node
    check_emit_args(blocks, [piece_block[piece_ptr[t]] for t in range(n_targets)], shapes, anchors, scales)
    n = blocks.shape[0]
    for t in range(n_targets):
        span = range(piece_ptr[t], piece_ptr[t + 1])
        for p in span:
            if not 0 <= piece_block[p] < n:
                raise IndexError(f"piece {p} of target {t}: block index {piece_block[p]} out of range [0, {n})")
            if piece_channels[p] < 1:
                raise ValueError(f"piece {p} of target {t}: {piece_channels[p]} channels, must be positive")
        got = sum(piece_channels[p] for p in span)
        if got != shapes[4 * t + 1]:
            raise ValueError(f"target {t}: its pieces cover {got} input channels, its shape has "
                             f"{shapes[4 * t + 1]}")


def numel_of(shapes: Sequence[int]) -> list[int]:
    return [math.prod(shapes[j:j + 4]) for j in range(0, len(shapes), 4)]


# ---------------------------------------------------------------------------------------------
# the compiled op

# dtypes the compiled kernels handle; other floating types (float8) use the reference
_KERNEL_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def emit_weights(blocks: Tensor, node_index: Sequence[int], shapes: Sequence[int],
                 anchors: Sequence[int], scales: Sequence[float]) -> Tensor:
    """Flat buffer of all weights (same arguments and result as :func:`emit_reference`).

    Calls the compiled ``torch.ops.ghn_ext.emit_weights`` when the extension is built (and
    ``GHN_EXT_REFERENCE`` is not set) and has a kernel for the blocks' device; otherwise
    :func:`emit_reference`. Differentiable with respect to ``blocks`` (twice with the kernel).
    """
    if (
        isinstance(blocks, Tensor)
        and (blocks.dtype in _KERNEL_DTYPES or not blocks.is_floating_point())  # ints: its TypeError
        and use_extension()
        and has_kernel("emit_weights", blocks.device)
    ):
        return torch.ops.ghn_ext.emit_weights.default(blocks, node_index, shapes, anchors, scales)
    return emit_reference(blocks, node_index, shapes, anchors, scales)


def emit_edge_weights(blocks: Tensor, piece_ptr: Sequence[int], piece_block: Sequence[int],
                      piece_channels: Sequence[int], shapes: Sequence[int], anchors: Sequence[int],
                      scales: Sequence[float]) -> Tensor:
    """Edge mode (same arguments and result as :func:`emit_edges_reference`), on the compiled
    ``torch.ops.ghn_ext.emit_edge_weights`` where it has a kernel, else the reference."""
    if (
        isinstance(blocks, Tensor)
        and (blocks.dtype in _KERNEL_DTYPES or not blocks.is_floating_point())
        and use_extension()
        and has_kernel("emit_edge_weights", blocks.device)
    ):
        return torch.ops.ghn_ext.emit_edge_weights.default(blocks, list(piece_ptr), list(piece_block),
                                                           list(piece_channels), shapes, anchors, scales)
    return emit_edges_reference(blocks, piece_ptr, piece_block, piece_channels, shapes, anchors, scales)


def _register_emission(name: str, check_args: Callable[..., None]) -> None:
    """Fake kernels and autograd of the emission op `name`, (blocks, *lists) -> the flat buffer, and of its
    backward `_name_backward`, (grad, *lists, block_shape) -> the blocks' gradient. The two are linear and
    each other's transpose, so each one's gradient is the other (double backward included). In both modes
    the target shapes are the third list from the end."""
    forward = getattr(torch.ops.ghn_ext, name).default
    backward = getattr(torch.ops.ghn_ext, f"_{name}_backward").default

    @torch.library.register_fake(f"ghn_ext::{name}")
    def _forward_fake(blocks, *lists):
        check_args(blocks, *lists)
        return blocks.new_empty((sum(numel_of(lists[-3])),))

    @torch.library.register_fake(f"ghn_ext::_{name}_backward")
    def _backward_fake(grad, *lists_and_block_shape):
        *lists, block_shape = lists_and_block_shape
        emitted = sum(numel_of(lists[-3]))
        torch._check(grad.dim() == 1 and grad.shape[0] == emitted,
                     lambda: f"grad must have shape ({emitted},) (the emitted buffer), got {tuple(grad.shape)}")
        return grad.new_empty(tuple(block_shape))

    def _forward_setup_context(ctx, inputs, output):
        ctx.lists = tuple(inputs[1:])
        ctx.block_shape = tuple(inputs[0].shape)

    def _forward_grad(ctx, grad):
        grad_blocks = backward(grad, *ctx.lists, ctx.block_shape) if ctx.needs_input_grad[0] else None
        return (grad_blocks,) + (None,) * len(ctx.lists)

    torch.library.register_autograd(f"ghn_ext::{name}", _forward_grad, setup_context=_forward_setup_context)

    def _backward_setup_context(ctx, inputs, output):
        ctx.lists = tuple(inputs[1:-1])

    def _backward_grad(ctx, grad_grad_blocks):
        grad_grad = forward(grad_grad_blocks, *ctx.lists) if ctx.needs_input_grad[0] else None
        return (grad_grad,) + (None,) * (len(ctx.lists) + 1)

    torch.library.register_autograd(f"ghn_ext::_{name}_backward", _backward_grad,
                                    setup_context=_backward_setup_context)


if HAS_EXTENSION:
    _register_emission("emit_weights", check_emit_args)
    _register_emission("emit_edge_weights", check_emit_edges_args)
