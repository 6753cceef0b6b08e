"""Tests of ghn_ext.ops.emit: the reference of sliced/tiled weight emission.

Expected weights are built entry by entry from the rule in the module docstring:
weight[a, b, y, x] = block[a % Co, b % Ci, row + y, col + x] * scale.
"""
from __future__ import annotations

import itertools
import math

import pytest
import torch

from ghn_ext.ops.emit import check_emit_args, emit_reference, numel_of

N, CO, CI, K = 3, 3, 2, 5


def hand_blocks(dtype=torch.float64) -> torch.Tensor:
    """Every entry distinct: block n, entry (o, i, y, x) holds n*1000 + o*100 + i*10 + y + x/10."""
    def axis(size, factor, dim):
        shape = [1] * 5
        shape[dim] = size
        return (torch.arange(size, dtype=torch.float64) * factor).view(shape)

    b = axis(N, 1000, 0) + axis(CO, 100, 1) + axis(CI, 10, 2) + axis(K, 1, 3) + axis(K, 0.1, 4)
    assert b[2, 1, 1, 3, 4].item() == pytest.approx(2000 + 100 + 10 + 3 + 0.4)
    return b.to(dtype)


def expected_weight(blocks, n, shape, anchor, scale):
    o, i, kh, kw = shape
    r, c = anchor
    co, ci = blocks.shape[1], blocks.shape[2]
    w = torch.empty(o, i, kh, kw, dtype=blocks.dtype)
    for a, b_, y, x in itertools.product(range(o), range(i), range(kh), range(kw)):
        w[a, b_, y, x] = blocks[n, a % co, b_ % ci, r + y, c + x] * scale
    return w


def emit_one(blocks, n, shape, anchor, scale):
    return emit_reference(blocks, [n], list(shape), list(anchor), [scale]).view(shape)


# ------------------------------------------------------------------------------------------ slicing
def test_full_block_is_copied_unchanged():
    blocks = hand_blocks()
    w = emit_one(blocks, 1, (CO, CI, K, K), (0, 0), 1.0)
    torch.testing.assert_close(w, blocks[1], rtol=0, atol=0)


@pytest.mark.parametrize("shape,anchor", [
    ((2, 1, 3, 3), (1, 2)),   # fewer channels, a 3x3 window inside the 5x5 kernel
    ((3, 2, 1, 1), (4, 4)),   # 1x1 at the bottom-right corner
    ((1, 2, 1, 5), (2, 0)),   # a 1x5 row
    ((3, 1, 5, 1), (0, 3)),   # a 5x1 column
    ((2, 2, 3, 3), (0, 0)),   # top-left
])
def test_slicing_takes_the_anchored_window(shape, anchor):
    blocks = hand_blocks()
    w = emit_one(blocks, 2, shape, anchor, 0.5)
    o, i, kh, kw = shape
    r, c = anchor
    torch.testing.assert_close(w, blocks[2, :o, :i, r:r + kh, c:c + kw] * 0.5, rtol=0, atol=0)
    torch.testing.assert_close(w, expected_weight(blocks, 2, shape, anchor, 0.5), rtol=0, atol=0)


def test_a_few_entries_by_hand():
    blocks = hand_blocks()
    w = emit_one(blocks, 1, (2, 1, 3, 3), (1, 2), 2.0)
    # entry (a, b, y, x) = block[1, a, b, 1 + y, 2 + x] * 2 = (1000 + 100a + 10b + (1+y) + (2+x)/10) * 2
    assert w[0, 0, 0, 0].item() == pytest.approx((1000 + 1 + 0.2) * 2)
    assert w[1, 0, 2, 1].item() == pytest.approx((1000 + 100 + 3 + 0.3) * 2)
    assert w[1, 0, 2, 2].item() == pytest.approx((1000 + 100 + 3 + 0.4) * 2)


# ------------------------------------------------------------------------------------------ tiling
@pytest.mark.parametrize("shape,anchor", [
    ((7, 5, 3, 3), (1, 1)),   # more channels on both axes, not multiples of the block's
    ((6, 2, 1, 1), (0, 0)),   # exact multiple along out
    ((2, 9, 2, 4), (3, 1)),   # more in-channels only, rectangular window
    ((10, 1, 1, 1), (4, 0)),  # bias-like (out, 1, 1, 1)
])
def test_tiling_repeats_the_block(shape, anchor):
    blocks = hand_blocks()
    scale = 0.25
    w = emit_one(blocks, 0, shape, anchor, scale)
    assert w.shape == shape
    torch.testing.assert_close(w, expected_weight(blocks, 0, shape, anchor, scale), rtol=0, atol=0)
    o, i, kh, kw = shape
    r, c = anchor
    for a, b in [(0, 0), (o - 1, i - 1), (o // 2, i - 1)]:
        for y, x in [(0, 0), (kh - 1, kw - 1)]:
            assert w[a, b, y, x] == blocks[0, a % CO, b % CI, r + y, c + x] * scale


# ------------------------------------------------------------------------------------------ flat layout
TARGETS = [  # (node, shape, anchor, scale)
    (2, (7, 5, 3, 3), (1, 1), 0.3),
    (0, (2, 1, 1, 1), (0, 0), 1.0),
    (1, (4, 2, 5, 5), (0, 0), -2.0),
    (2, (3, 3, 1, 5), (4, 0), 0.7),
    (0, (1, 1, 1, 1), (4, 4), 1.5),
]


def flat_args(targets):
    nodes = [t[0] for t in targets]
    shapes = [s for t in targets for s in t[1]]
    anchors = [a for t in targets for a in t[2]]
    scales = [t[3] for t in targets]
    return nodes, shapes, anchors, scales


def test_flat_buffer_layout_and_order():
    blocks = hand_blocks()
    flat = emit_reference(blocks, *flat_args(TARGETS))
    sizes = [math.prod(t[1]) for t in TARGETS]
    assert flat.shape == (sum(sizes),)
    assert numel_of(flat_args(TARGETS)[1]) == sizes
    offset = 0
    for (n, shape, anchor, scale), size in zip(TARGETS, sizes):
        piece = flat[offset:offset + size].view(shape)  # row-major (out, in, kh, kw)
        torch.testing.assert_close(piece, expected_weight(blocks, n, shape, anchor, scale), rtol=0, atol=0)
        offset += size
    # the order of the targets is the order in the buffer
    flat_rev = emit_reference(blocks, *flat_args(TARGETS[::-1]))
    rev_pieces = torch.split(flat_rev, sizes[::-1])
    for piece, fwd in zip(rev_pieces[::-1], torch.split(flat, sizes)):
        torch.testing.assert_close(piece, fwd, rtol=0, atol=0)


def test_no_targets_gives_an_empty_buffer():
    flat = emit_reference(hand_blocks(torch.float32), [], [], [], [])
    assert flat.shape == (0,) and flat.dtype == torch.float32


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_dtype_is_kept(dtype):
    flat = emit_reference(hand_blocks(dtype), *flat_args(TARGETS[:2]))
    assert flat.dtype == dtype


# ------------------------------------------------------------------------------------------ gradients
def test_gradient_of_a_tiled_weight_sums_over_copies():
    shape, anchor, scale, n = (7, 5, 2, 3), (2, 1), 0.3, 1
    blocks = torch.randn(N, CO, CI, K, K, dtype=torch.float64, requires_grad=True)
    w = emit_reference(blocks, [n], list(shape), list(anchor), [scale]).view(shape)
    g_out = torch.randn(shape, dtype=torch.float64)
    (w * g_out).sum().backward()

    manual = torch.zeros(N, CO, CI, K, K, dtype=torch.float64)
    o, i, kh, kw = shape
    for a, b, y, x in itertools.product(range(o), range(i), range(kh), range(kw)):
        manual[n, a % CO, b % CI, anchor[0] + y, anchor[1] + x] += g_out[a, b, y, x] * scale
    torch.testing.assert_close(blocks.grad, manual, rtol=1e-12, atol=1e-12)
    # entries outside the window and other blocks get nothing
    assert blocks.grad[0].abs().sum() == 0 and blocks.grad[2].abs().sum() == 0
    assert blocks.grad[n, :, :, :anchor[0]].abs().sum() == 0


def test_gradient_accumulates_over_targets_sharing_a_block():
    blocks = torch.randn(N, CO, CI, K, K, dtype=torch.float64, requires_grad=True)
    flat = emit_reference(blocks, *flat_args(TARGETS))
    g_out = torch.randn_like(flat)
    (flat * g_out).sum().backward()

    manual = torch.zeros_like(blocks)
    offset = 0
    for n, (o, i, kh, kw), (r, c), scale in TARGETS:
        g = g_out[offset:offset + o * i * kh * kw].view(o, i, kh, kw)
        for a, b, y, x in itertools.product(range(o), range(i), range(kh), range(kw)):
            manual[n, a % CO, b % CI, r + y, c + x] += g[a, b, y, x] * scale
        offset += o * i * kh * kw
    torch.testing.assert_close(blocks.grad, manual, rtol=1e-12, atol=1e-12)


def test_gradcheck():
    blocks = torch.randn(2, 2, 2, 3, 3, dtype=torch.float64, requires_grad=True)
    args = ([1, 0, 1], [3, 5, 2, 2, 1, 1, 3, 3, 4, 1, 1, 1], [1, 0, 0, 0, 2, 2], [0.5, 2.0, -1.0])
    assert torch.autograd.gradcheck(lambda b: emit_reference(b, *args), (blocks,))


# ------------------------------------------------------------------------------------------ errors
def good():
    return hand_blocks(torch.float32), [1], [2, 1, 3, 3], [0, 0], [1.0]


@pytest.mark.parametrize("node", [3, 99, -1])
def test_bad_node_index(node):
    blocks, _, shapes, anchors, scales = good()
    with pytest.raises(IndexError, match=f"node index {node} out of range"):
        emit_reference(blocks, [node], shapes, anchors, scales)


@pytest.mark.parametrize("shape,anchor", [
    ((1, 1, 3, 3), (3, 0)),   # rows 3..5 of a 5x5 kernel
    ((1, 1, 3, 3), (0, 3)),
    ((1, 1, 6, 1), (0, 0)),   # taller than the kernel
    ((1, 1, 1, 1), (-1, 0)),  # negative anchor
    ((1, 1, 1, 1), (0, 5)),
])
def test_window_leaving_the_block(shape, anchor):
    blocks = hand_blocks(torch.float32)
    with pytest.raises(ValueError, match="leaves the 5x5 block"):
        emit_reference(blocks, [0], list(shape), list(anchor), [1.0])


@pytest.mark.parametrize("which", ["shapes", "anchors", "scales", "nodes"])
def test_mismatched_list_lengths(which):
    blocks, nodes, shapes, anchors, scales = good()
    if which == "shapes":
        shapes = shapes + [1]
    elif which == "anchors":
        anchors = anchors[:1]
    elif which == "scales":
        scales = scales * 2
    else:
        nodes = nodes * 2
    with pytest.raises(ValueError, match="targets need"):
        emit_reference(blocks, nodes, shapes, anchors, scales)


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.bool])
def test_non_float_blocks(dtype):
    _, nodes, shapes, anchors, scales = good()
    with pytest.raises(TypeError, match="floating point"):
        emit_reference(torch.zeros(N, CO, CI, K, K, dtype=dtype), nodes, shapes, anchors, scales)


@pytest.mark.parametrize("shape", [(3, 3, 2, 5), (3, 3, 2, 5, 4), (1, 3, 3, 2, 5, 5)])
def test_bad_block_shape(shape):
    _, nodes, shapes, anchors, scales = good()
    with pytest.raises(ValueError, match=r"blocks must have shape \(N, Co, Ci, K, K\)"):
        emit_reference(torch.zeros(shape), nodes, shapes, anchors, scales)


@pytest.mark.parametrize("shape", [[0, 1, 1, 1], [1, 1, 0, 1], [2, -1, 1, 1]])
def test_non_positive_shape(shape):
    with pytest.raises(ValueError, match="must be positive"):
        check_emit_args(hand_blocks(torch.float32), [0], shape, [0, 0], [1.0])
