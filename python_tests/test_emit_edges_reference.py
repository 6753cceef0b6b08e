"""Tests of the edge mode of weight emission (ghn_ext.ops.emit.emit_edges_reference): a weight laid out
from several blocks side by side along its input channels, each piece sliced and tiled like a weight.

Expected weights are built entry by entry: for input channel b inside piece p (local channel b'),
weight[a, b, y, x] = blocks[piece_block[p], a % Co, b' % Ci, row + y, col + x] * scale.
"""
from __future__ import annotations

import itertools

import pytest
import torch

from ghn_ext.ops.emit import emit_edges_reference, emit_reference

N, CO, CI, K = 4, 3, 2, 3


def blocks(dtype=torch.float64, seed=0, requires_grad=False):
    b = torch.randn(N, CO, CI, K, K, dtype=dtype, generator=torch.Generator().manual_seed(seed))
    return b.requires_grad_(requires_grad)


# (out, kh, kw, anchor, scale, [(block, channels), ...]) per target
TARGETS = [
    (5, 1, 1, (0, 0), 0.5, [(2, 3), (0, 1), (3, 4)]),   # three edges, tiled along out and one piece's in
    (2, 3, 3, (0, 0), 2.0, [(1, 2)]),                   # one edge: an ordinary weight
    (3, 2, 2, (1, 1), -1.0, [(0, 1), (0, 5)]),          # two pieces from the same block
]


def flat_args(targets):
    ptr, pb, pc, shapes, anchors, scales = [0], [], [], [], [], []
    for o, kh, kw, anchor, scale, pieces in targets:
        pb += [b for b, _ in pieces]
        pc += [c for _, c in pieces]
        ptr.append(len(pb))
        shapes += [o, sum(c for _, c in pieces), kh, kw]
        anchors += list(anchor)
        scales.append(scale)
    return ptr, pb, pc, shapes, anchors, scales


def expected(bl, target):
    o, kh, kw, (r, c), scale, pieces = target
    cols = []
    for blk, ch in pieces:
        w = torch.empty(o, ch, kh, kw, dtype=bl.dtype)
        for a, b, y, x in itertools.product(range(o), range(ch), range(kh), range(kw)):
            w[a, b, y, x] = bl[blk, a % CO, b % CI, r + y, c + x] * scale
        cols.append(w)
    return torch.cat(cols, dim=1)


def test_entries_by_the_rule():
    bl = blocks()
    flat = emit_edges_reference(bl, *flat_args(TARGETS))
    offset = 0
    for t in TARGETS:
        want = expected(bl, t)
        got = flat[offset:offset + want.numel()].view(want.shape)
        torch.testing.assert_close(got, want, rtol=0, atol=0)
        offset += want.numel()
    assert offset == flat.numel()


def test_a_few_entries_by_hand():
    bl = blocks()
    w = emit_edges_reference(bl, *flat_args(TARGETS[:1])).view(5, 8, 1, 1)
    # input channels 0-2 come from block 2, channel 3 from block 0, channels 4-7 from block 3
    assert w[4, 2, 0, 0] == bl[2, 1, 0, 0, 0] * 0.5     # out 4 % 3 = 1, in 2 % 2 = 0
    assert w[0, 3, 0, 0] == bl[0, 0, 0, 0, 0] * 0.5
    assert w[1, 7, 0, 0] == bl[3, 1, 1, 0, 0] * 0.5     # local channel 3 of block 3 -> 3 % 2 = 1


def test_the_size_follows_the_number_of_edges():
    bl = blocks()
    for k in range(1, 5):
        ptr, pb, pc, shapes, anchors, scales = flat_args([(4, 1, 1, (0, 0), 1.0, [(e, 3) for e in range(k)])])
        assert emit_edges_reference(bl, ptr, pb, pc, shapes, anchors, scales).numel() == 4 * 3 * k


def test_one_piece_per_target_is_the_node_mode():
    bl = blocks()
    node_targets = [(1, (7, 5, 1, 1), (2, 2), 0.3), (3, (2, 2, 3, 3), (0, 0), 1.0), (1, (1, 1, 2, 2), (1, 0), 2.0)]
    nodes, shapes, anchors, scales = [], [], [], []
    for n, s, a, sc in node_targets:
        nodes.append(n), shapes.extend(s), anchors.extend(a), scales.append(sc)
    edge = emit_edges_reference(bl, list(range(len(nodes) + 1)), nodes, [s[1] for _, s, _, _ in node_targets],
                                shapes, anchors, scales)
    torch.testing.assert_close(edge, emit_reference(bl, nodes, shapes, anchors, scales), rtol=0, atol=0)


def test_no_targets_gives_an_empty_buffer():
    assert emit_edges_reference(blocks(), [0], [], [], [], [], []).numel() == 0


def test_gradient_accumulates_over_pieces_and_copies():
    bl = blocks(requires_grad=True)
    flat = emit_edges_reference(bl, *flat_args(TARGETS))
    g_out = torch.randn_like(flat)
    (flat * g_out).sum().backward()
    manual = torch.zeros_like(bl)
    offset = 0
    for o, kh, kw, (r, c), scale, pieces in TARGETS:
        i = sum(ch for _, ch in pieces)
        g = g_out[offset:offset + o * i * kh * kw].view(o, i, kh, kw)
        start = 0
        for blk, ch in pieces:
            for a, b, y, x in itertools.product(range(o), range(ch), range(kh), range(kw)):
                manual[blk, a % CO, b % CI, r + y, c + x] += g[a, start + b, y, x] * scale
            start += ch
        offset += o * i * kh * kw
    torch.testing.assert_close(bl.grad, manual, rtol=1e-12, atol=1e-12)


def test_gradcheck():
    args = flat_args(TARGETS)
    bl = torch.randn(N, CO, CI, K, K, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda b: emit_edges_reference(b, *args), (bl,))


# ------------------------------------------------------------------------------------------ errors
def good():
    return flat_args(TARGETS[:2])


@pytest.mark.parametrize("change,error,match", [
    (lambda a: a.__setitem__(0, [0, 4, 4]), ValueError, "target 1: needs at least one piece"),
    (lambda a: a.__setitem__(0, [0, 3]), ValueError, "piece_ptr must hold 3 offsets"),
    (lambda a: a.__setitem__(0, [1, 3, 4]), ValueError, "piece_ptr must hold"),
    (lambda a: a.__setitem__(2, [3, 1, 4]), ValueError, "need as many channel counts"),
    (lambda a: a.__setitem__(2, [3, 1, 4, 0]), ValueError, "0 channels, must be positive"),
    (lambda a: a.__setitem__(2, [3, 1, 3, 2]), ValueError, "cover 7 input channels, its shape has 8"),
    (lambda a: a.__setitem__(1, [2, 9, 3, 1]), IndexError, "block index 9 out of range"),
    (lambda a: a.__setitem__(1, [4, 0, 3, 1]), IndexError, "node index 4 out of range"),
    (lambda a: a.__setitem__(4, [0, 0, 1, 0]), ValueError, "leaves the 3x3 block"),
    (lambda a: a.__setitem__(3, a[3][:6]), ValueError, "targets need"),
])
def test_bad_arguments(change, error, match):
    args = [list(x) for x in good()]
    change(args)
    with pytest.raises(error, match=match):
        emit_edges_reference(blocks(), *args)
