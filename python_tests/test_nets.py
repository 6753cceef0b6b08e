"""Tests of ghn_ext.core.primitives and ghn_ext.nets.network: ops, shapes, parameters, forward, FLOPs."""
from __future__ import annotations

import dataclasses
import math
import random

import pytest
import torch
import torch.nn.functional as F

import ghn_ext.nets.network as netmod
from ghn_ext.core.graph import ArchGraph, GraphError, Node
from ghn_ext.nets import (ArchNetwork, NodeShape, count_flops, count_params, infer_shapes, param_shapes,
                          run_network, summary)
from ghn_ext.nets.network import norm_count
from ghn_ext.core.primitives import OP_INDEX, OP_NAMES, PRIMITIVES, batch_norm
from ghn_ext.spaces import classification as cls_space
from ghn_ext.spaces import nb201

torch.set_num_threads(min(2, torch.get_num_threads()))


# --------------------------------------------------------------------------------- helpers
def hand_graph() -> ArchGraph:
    """input -> stem_conv(3->4) -> conv1x1(8) -> classifier(10)."""
    return ArchGraph([Node("input", 0, 3), Node("stem_conv", 0, 4), Node("conv1x1", 0, 8),
                      Node("classifier", 1, 10)], [(0, 1), (1, 2), (2, 3)]).validate()


def small_classification(seed: int) -> ArchGraph:
    return cls_space.sample_architecture(random.Random(seed), num_nodes=5, num_blocks=3, channels=6)


def nb201_graph(seed: int, **kw) -> ArchGraph:
    ops = tuple(random.Random(seed).choice(nb201.OPS) for _ in nb201.EDGES)
    return nb201.network(ops, **kw)


def nb201_graph_without_none(seed: int, **kw) -> ArchGraph:
    rng = random.Random(seed)
    return nb201.network(tuple(rng.choice(nb201.OPS[1:]) for _ in nb201.EDGES), **kw)


def randomise_norm_stats(net: ArchNetwork, seed: int = 0) -> None:
    gen = torch.Generator().manual_seed(seed)
    for mean, var in net.norm_stats().values():
        mean.copy_(torch.randn(mean.shape, generator=gen) * 0.1)
        var.copy_(torch.rand(var.shape, generator=gen) + 0.5)


def identity_norm(t):
    return t


# --------------------------------------------------------------------------------- vocabulary
def test_vocabulary_is_consistent():
    assert len(OP_NAMES) == len(set(OP_NAMES)) == len(PRIMITIVES)
    assert all(OP_INDEX[n] == i for i, n in enumerate(OP_NAMES))
    assert all(p.name == n for n, p in PRIMITIVES.items())
    assert {p.combine for p in PRIMITIVES.values()} == {"apply_sum", "concat", "source", "head"}
    assert set(cls_space.OPS) <= set(PRIMITIVES)
    assert set(nb201.TO_PRIMITIVE.values()) <= set(PRIMITIVES)
    # keeps_channels ops never have weights, weighted ops may stride
    for p in PRIMITIVES.values():
        if p.keeps_channels:
            assert p.params(4, 4) == {}


C_IN, C_OUT = 4, 6
EXPECTED_PARAMS = {
    "input": {},
    "stem_conv": {"weight": (C_OUT, C_IN, 3, 3)},
    "bottleneck": {"weight": (C_OUT, C_IN, 1, 1)},
    "concat": {},
    "sum": {},
    "pool_conv1x1": {"weight": (C_OUT, C_IN, 1, 1)},
    "classifier": {"weight": (C_OUT, C_IN), "bias": (C_OUT,)},
    "identity": {},
    "zero": {},
    "conv1x1": {"weight": (C_OUT, C_IN, 1, 1)},
    "conv3x3": {"weight": (C_OUT, C_IN, 3, 3)},
    "conv5x5": {"weight": (C_OUT, C_IN, 5, 5)},
    "sep_conv3x3": {"depthwise": (C_IN, 1, 3, 3), "pointwise": (C_OUT, C_IN, 1, 1)},
    "sep_conv5x5": {"depthwise": (C_IN, 1, 5, 5), "pointwise": (C_OUT, C_IN, 1, 1)},
    "dil_sep_conv3x3": {"depthwise": (C_IN, 1, 3, 3), "pointwise": (C_OUT, C_IN, 1, 1)},
    "dil_sep_conv5x5": {"depthwise": (C_IN, 1, 5, 5), "pointwise": (C_OUT, C_IN, 1, 1)},
    "conv1x7_7x1": {"weight_1x7": (C_OUT, C_IN, 1, 7), "weight_7x1": (C_OUT, C_OUT, 7, 1)},
    "max_pool3x3": {},
    "avg_pool3x3": {},
    "norm_relu": {},
}
USES_NORM = {"norm_relu", "stem_conv", "bottleneck", "conv1x1", "conv3x3", "conv5x5", "sep_conv3x3", "sep_conv5x5",
             "dil_sep_conv3x3", "dil_sep_conv5x5", "conv1x7_7x1"}


def test_expected_table_covers_every_op():
    assert set(EXPECTED_PARAMS) == set(OP_NAMES)


@pytest.mark.parametrize("op", OP_NAMES)
def test_primitive_weight_shapes(op):
    assert PRIMITIVES[op].params(C_IN, C_OUT) == EXPECTED_PARAMS[op]
    assert PRIMITIVES[op].uses_norm == (op in USES_NORM)


@pytest.mark.parametrize("op,stride", [(op, s) for op in OP_NAMES for s in (1, 2)
                                       if s == 1 or PRIMITIVES[op].allows_stride])
def test_primitive_output_shape(op, stride):
    prim = PRIMITIVES[op]
    torch.manual_seed(0)
    x = torch.randn(2, C_IN, 9, 9)       # odd size: every op must give ceil(9 / stride)
    w = {k: torch.randn(s) for k, s in prim.params(C_IN, C_OUT).items()}
    calls = []

    def norm(t):
        calls.append(t.shape)
        return t

    y = prim.apply(x, w, stride, norm)
    size = math.ceil(9 / stride)
    if op == "classifier":
        assert y.shape == (2, C_OUT)
    elif prim.keeps_channels or op in ("input", "concat"):
        assert y.shape == (2, C_IN, size, size)
    else:
        assert y.shape == (2, C_OUT, size, size)
    assert len(calls) == (1 if prim.uses_norm else 0)
    if calls:
        assert calls[0] == y.shape


def test_primitive_values_match_manual_computation():
    torch.manual_seed(1)
    x = torch.randn(2, C_IN, 8, 8)
    P = PRIMITIVES
    w3 = torch.randn(C_OUT, C_IN, 3, 3)
    torch.testing.assert_close(P["conv3x3"].apply(x, {"weight": w3}, 2, identity_norm),
                               F.conv2d(F.relu(x), w3, stride=2, padding=1))
    torch.testing.assert_close(P["stem_conv"].apply(x, {"weight": w3}, 1, identity_norm),
                               F.conv2d(x, w3, padding=1))           # no ReLU on the image
    dw, pw = torch.randn(C_IN, 1, 5, 5), torch.randn(C_OUT, C_IN, 1, 1)
    torch.testing.assert_close(P["dil_sep_conv5x5"].apply(x, {"depthwise": dw, "pointwise": pw}, 1, identity_norm),
                               F.conv2d(F.conv2d(F.relu(x), dw, padding=4, dilation=2, groups=C_IN), pw))
    torch.testing.assert_close(P["sep_conv5x5"].apply(x, {"depthwise": dw, "pointwise": pw}, 2, identity_norm),
                               F.conv2d(F.conv2d(F.relu(x), dw, stride=2, padding=2, groups=C_IN), pw))
    a, b = torch.randn(C_OUT, C_IN, 1, 7), torch.randn(C_OUT, C_OUT, 7, 1)
    torch.testing.assert_close(P["conv1x7_7x1"].apply(x, {"weight_1x7": a, "weight_7x1": b}, 1, identity_norm),
                               F.conv2d(F.conv2d(F.relu(x), a, padding=(0, 3)), b, padding=(3, 0)))
    torch.testing.assert_close(P["identity"].apply(x, {}, 1, identity_norm), x)
    torch.testing.assert_close(P["norm_relu"].apply(x, {}, 1, lambda t: 2 * t - 1), F.relu(2 * x - 1))  # BN, then ReLU
    assert torch.equal(P["zero"].apply(x, {}, 1, identity_norm), torch.zeros_like(x))
    torch.testing.assert_close(P["max_pool3x3"].apply(x, {}, 1, identity_norm), F.max_pool2d(x, 3, 1, 1))
    # average pool ignores padding: a corner averages its 2x2 neighbourhood
    y = P["avg_pool3x3"].apply(x, {}, 1, identity_norm)
    torch.testing.assert_close(y[:, :, 0, 0], x[:, :, :2, :2].mean(dim=(2, 3)))
    w1 = torch.randn(C_OUT, C_IN, 1, 1)
    torch.testing.assert_close(P["pool_conv1x1"].apply(x, {"weight": w1}, 2, identity_norm),
                               F.conv2d(F.avg_pool2d(x, 2, 2), w1))
    lw, lb = torch.randn(C_OUT, C_IN), torch.randn(C_OUT)
    torch.testing.assert_close(P["classifier"].apply(x, {"weight": lw, "bias": lb}, 1, identity_norm),
                               x.mean(dim=(2, 3)) @ lw.t() + lb)


@pytest.mark.parametrize("size", [8, 9])
def test_strided_1x1_conv_equals_the_strided_convolution(size):
    # conv1x1 and bottleneck subsample instead of calling a strided 1x1 conv (a oneDNN workaround):
    # values and gradients must be those of F.conv2d(stride=2), odd sizes included
    x = torch.randn(2, C_IN, size, size).contiguous(memory_format=torch.channels_last).requires_grad_()
    w = torch.randn(C_OUT, C_IN, 1, 1, requires_grad=True)
    for op in ("conv1x1", "bottleneck"):
        y = PRIMITIVES[op].apply(x, {"weight": w}, 2, identity_norm)
        xr = x.detach().contiguous().requires_grad_()     # contiguous: the correct oneDNN path
        wr = w.detach().clone().requires_grad_()
        ref = F.conv2d(F.relu(xr), wr, stride=2)
        torch.testing.assert_close(y, ref)
        g = torch.randn_like(y)
        torch.testing.assert_close(torch.autograd.grad(y, (x, w), g), torch.autograd.grad(ref, (xr, wr), g))


def test_pool_conv_on_odd_size_rounds_up_like_a_strided_conv():
    x = torch.randn(1, 2, 9, 9)
    y = PRIMITIVES["pool_conv1x1"].apply(x, {"weight": torch.ones(1, 2, 1, 1)}, 2, identity_norm)
    assert y.shape == (1, 1, 5, 5)
    torch.testing.assert_close(y[0, 0, 4, 4], x[0, :, 8, 8].sum())   # last window: one pixel


def test_batch_norm():
    x = torch.randn(8, 3, 4, 4) * 3 + 2
    y = batch_norm(x, None, training=True)
    torch.testing.assert_close(y.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-5, rtol=0)
    torch.testing.assert_close(y.var(dim=(0, 2, 3), unbiased=False), torch.ones(3), atol=1e-3, rtol=0)
    mean, var = torch.tensor([1.0, 2.0, 3.0]), torch.tensor([4.0, 1.0, 0.25])
    y = batch_norm(x, (mean.clone(), var.clone()), training=False)
    torch.testing.assert_close(y, (x - mean[:, None, None]) / torch.sqrt(var[:, None, None] + 1e-5))
    m, v = mean.clone(), var.clone()
    batch_norm(x, (m, v), training=True)               # updates the running stats
    torch.testing.assert_close(m, 0.9 * mean + 0.1 * x.mean(dim=(0, 2, 3)))
    torch.testing.assert_close(v, 0.9 * var + 0.1 * x.var(dim=(0, 2, 3), unbiased=True))


# --------------------------------------------------------------------------------- Eq. 7
def test_apply_sum_over_two_inputs_matches_manual_computation():
    """Node 3 (sep_conv3x3) reads nodes 1 and 2: its output is op(in1) + op(in2), one shared set of
    weights, a separate BatchNorm per input (paper Eq. 7)."""
    g = ArchGraph([Node("input", 0, 3), Node("stem_conv", 0, 4), Node("conv1x1", 0, 4),
                   Node("sep_conv3x3", 0, 5), Node("classifier", 0, 10)],
                  [(0, 1), (1, 2), (1, 3), (2, 3), (3, 4)]).validate()
    assert norm_count(g) == {1: 1, 2: 1, 3: 2}
    torch.manual_seed(0)
    x = torch.randn(3, 3, 8, 8)
    ps = param_shapes(g, (3, 8, 8))
    w = {v: {k: torch.randn(s) for k, s in p.items()} for v, p in ps.items()}
    stats = {(1, 0): (torch.randn(4) * .1, torch.rand(4) + .5), (2, 0): (torch.randn(4) * .1, torch.rand(4) + .5),
             (3, 0): (torch.randn(5) * .1, torch.rand(5) + .5), (3, 1): (torch.randn(5), torch.rand(5) + 2)}

    def bn(t, key, training):
        if training:
            return F.batch_norm(t, None, None, training=True)
        return F.batch_norm(t, stats[key][0], stats[key][1], training=False)

    def sep(t):
        return F.conv2d(F.conv2d(F.relu(t), w[3]["depthwise"], padding=1, groups=4), w[3]["pointwise"])

    for training in (True, False):
        s = bn(F.conv2d(x, w[1]["weight"], padding=1), (1, 0), training)
        a = bn(F.conv2d(F.relu(s), w[2]["weight"]), (2, 0), training)
        node3 = bn(sep(s), (3, 0), training) + bn(sep(a), (3, 1), training)
        expected = F.linear(node3.mean(dim=(2, 3)), w[4]["weight"], w[4]["bias"])
        got = run_network(g, x, w, None if training else stats, training=training)
        torch.testing.assert_close(got, expected)
    # different running stats per input position really matter
    swapped = {**stats, (3, 0): stats[(3, 1)], (3, 1): stats[(3, 0)]}
    assert not torch.allclose(run_network(g, x, w, swapped, training=False),
                              run_network(g, x, w, stats, training=False))


def test_concat_node_and_multiple_heads():
    g = ArchGraph([Node("input", 0, 3), Node("stem_conv", 0, 4), Node("conv1x1", 0, 2), Node("classifier", 0, 7),
                   Node("concat", 1), Node("classifier", 1, 10)],
                  [(0, 1), (1, 2), (1, 3), (1, 4), (2, 4), (4, 5)]).validate()
    shapes = infer_shapes(g, (3, 8, 8))
    assert shapes[4] == NodeShape(6, 8, 8)
    assert param_shapes(g, (3, 8, 8))[5] == {"weight": (10, 6), "bias": (10,)}
    out = ArchNetwork(g, (3, 8, 8))(torch.randn(2, 3, 8, 8))
    assert isinstance(out, list) and [o.shape for o in out] == [(2, 7), (2, 10)]


# --------------------------------------------------------------------------------- infer_shapes
def test_infer_shapes_hand_graph():
    assert infer_shapes(hand_graph()) == [NodeShape(3, 32, 32), NodeShape(4, 32, 32), NodeShape(8, 32, 32),
                                          NodeShape(10, 1, 1)]
    assert infer_shapes(hand_graph(), (3, 7, 5))[2] == NodeShape(8, 7, 5)


def _g(nodes, edges):
    return ArchGraph(nodes, edges).validate()


@pytest.mark.parametrize("graph,size,match", [
    (lambda: _g([Node("input", 0, 3), Node("stem_conv", 0, 4), Node("conv1x1", 0, 8), Node("sum", 0),
                 Node("classifier", 0, 10)], [(0, 1), (1, 2), (1, 3), (2, 3), (3, 4)]),
     (3, 8, 8), r"node 3 \(sum\) sums inputs of different shapes"),
    (lambda: _g([Node("input", 0, 3), Node("stem_conv", 0, 4), Node("conv1x1", 0, 4, stride=2), Node("concat", 0),
                 Node("classifier", 0, 10)], [(0, 1), (1, 2), (1, 3), (2, 3), (3, 4)]),
     (3, 8, 8), r"node 3 \(concat\): inputs of different spatial sizes"),
    (lambda: _g([Node("input", 0, 3), Node("stem_conv", 0, 4), Node("identity", 0, 5), Node("classifier", 0, 10)],
                [(0, 1), (1, 2), (2, 3)]),
     (3, 8, 8), r"node 2 \(identity\) keeps 4 channels but declares 5"),
    (hand_graph, (1, 8, 8), "node 0: input declares 3 channels, data has 1"),
    (lambda: _g([Node("input", 0, 3), Node("stem_conv", 0, 0), Node("classifier", 0, 10)], [(0, 1), (1, 2)]),
     (3, 8, 8), r"node 1 \(stem_conv\) needs a positive channel count"),
])
def test_infer_shapes_errors(graph, size, match):
    with pytest.raises(GraphError, match=match):
        infer_shapes(graph(), size)


def _traced_shapes(graph, x, weights, monkeypatch):
    """Run the network recording the real output of every per-input op application."""
    calls = []

    def wrap(fn):
        def apply(*args):
            y = fn(*args)
            calls.append(tuple(y.shape))
            return y
        return apply

    monkeypatch.setattr(netmod, "PRIMITIVES",
                        {k: dataclasses.replace(p, apply=wrap(p.apply)) for k, p in PRIMITIVES.items()})
    run_network(graph, x, weights)
    monkeypatch.undo()
    preds, it, out = graph.predecessors(), iter(calls), {}
    for v in graph.topological_order():
        if PRIMITIVES[graph.nodes[v].op].combine in ("apply_sum", "head"):
            got = {next(it) for _ in preds[v]}
            assert len(got) == 1
            out[v] = got.pop()
    assert next(it, None) is None
    return out


@pytest.mark.parametrize("make,size", [
    (lambda: small_classification(1), 32), (lambda: small_classification(2), 33),
    (lambda: nb201_graph(3, cells_per_stage=1), 32), (lambda: nb201_graph(4, cells_per_stage=1), 31),
    (lambda: cls_space.imagenet_mobile_network(cls_space.sample_cell(random.Random(0), 3), 2, num_blocks=11),
     45),
])
def test_infer_shapes_match_real_forward(make, size, monkeypatch):
    g = make()
    x = torch.randn(1, 3, size, size)
    shapes = infer_shapes(g, (3, size, size))
    w = {v: {k: torch.randn(s) * 0.1 for k, s in p.items()} for v, p in param_shapes(g, (3, size, size)).items()}
    for v, real in _traced_shapes(g, x, w, monkeypatch).items():
        s = shapes[v]
        expect = (1, s.channels) if g.nodes[v].op == "classifier" else (1, s.channels, s.height, s.width)
        assert real == expect, (v, g.nodes[v])


# --------------------------------------------------------------------------------- parameters and FLOPs
def test_hand_graph_params_and_flops():
    g = hand_graph()
    assert param_shapes(g) == {1: {"weight": (4, 3, 3, 3)}, 2: {"weight": (8, 4, 1, 1)},
                               3: {"weight": (10, 8), "bias": (10,)}}
    # 4*3*3*3 + 8*4 + 10*8 + 10
    assert count_params(g) == 108 + 32 + 90 == 230
    stem = 2 * 32 * 32 * 4 * (3 * 3 * 3)     # 2 * MACs: each output pixel and channel, 27 taps
    conv = 2 * 32 * 32 * 8 * 4
    linear = 2 * 8 * 10                      # pooling and the bias add are not counted
    assert count_flops(g) == stem + conv + linear == 286880
    assert count_flops(g, (3, 64, 64)) == 4 * (stem + conv) + linear
    assert count_params(g, (3, 64, 64)) == 230


def test_sep_conv_flops_by_hand():
    g = ArchGraph([Node("input", 0, 3), Node("stem_conv", 0, 4, stride=2), Node("sep_conv3x3", 0, 8),
                   Node("classifier", 0, 10)], [(0, 1), (1, 2), (2, 3)]).validate()
    # stride-2 stem: 16x16 output
    assert count_flops(g) == 2 * 16 * 16 * 4 * 27 + 2 * 16 * 16 * 4 * 9 + 2 * 16 * 16 * 8 * 4 + 2 * 8 * 10
    assert count_params(g) == 108 + 36 + 32 + 90


def test_summary():
    s = summary(hand_graph())
    lines = s.splitlines()
    assert len(lines) == 3
    assert lines[0].startswith("space: custom") and hand_graph().stable_hash() in lines[0]
    assert "nodes: 4" in lines[0] and "edges: 3" in lines[0] and "blocks: 2" in lines[0]
    assert lines[1] == "ops: classifier x1, conv1x1 x1, input x1, stem_conv x1"
    assert lines[2] == "params: 230   FLOPs@3x32x32: 0.3M"


@pytest.mark.parametrize("make", [lambda: small_classification(0), lambda: nb201_graph(5),
                                  lambda: cls_space.sample_architecture(random.Random(1))])
def test_parameter_counts_agree_with_arch_network(make):
    g = make()
    net = ArchNetwork(g)
    assert sum(p.numel() for p in net.parameters()) == count_params(g)
    assert {(v, name): tuple(t.shape) for v, ws in net.node_weights().items() for name, t in ws.items()} == \
        {(v, name): s for v, p in param_shapes(g).items() for name, s in p.items()}
    assert len(list(net.buffers())) == 2 * sum(norm_count(g).values())
    assert set(net.norm_stats()) == {(v, k) for v, c in norm_count(g).items() for k in range(c)}


# --------------------------------------------------------------------------------- forward
@pytest.mark.parametrize("seed", range(5))
def test_output_shapes_classification(seed):
    g = small_classification(seed)
    out = ArchNetwork(g)(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 10) and torch.isfinite(out).all()


@pytest.mark.parametrize("seed", range(5))
def test_output_shapes_nb201(seed):
    g = nb201_graph(seed)
    net = ArchNetwork(g)
    out = net(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 10) and torch.isfinite(out).all()
    net.eval()
    assert net(torch.randn(1, 3, 32, 32)).shape == (1, 10)


def test_full_classification_network_forward():
    g = cls_space.sample_architecture(random.Random(0))   # N = 7, B = 18, F = 32
    assert g.meta["num_blocks"] == 18 and g.meta["channels"] == 32
    out = ArchNetwork(g)(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 10) and torch.isfinite(out).all()


@pytest.mark.parametrize("make", [lambda: small_classification(3), lambda: nb201_graph(6, cells_per_stage=2)])
def test_supplied_weights_match_arch_network(make):
    g = make()
    torch.manual_seed(0)
    net = ArchNetwork(g)
    randomise_norm_stats(net)
    x = torch.randn(4, 3, 32, 32)
    # eval mode: running statistics
    net.eval()
    with torch.no_grad():
        torch.testing.assert_close(run_network(g, x, net.node_weights(), net.norm_stats(), training=False),
                                   net(x), rtol=0, atol=0)
        # a module built from supplied weights behaves identically
        twin = ArchNetwork(g, weights=net.node_weights())
        twin.load_state_dict(net.state_dict())
        twin.eval()
        torch.testing.assert_close(twin(x), net(x), rtol=0, atol=0)
    # train mode: batch statistics, and both paths update the running stats the same way
    net.train()
    stats = {k: (m.clone(), v.clone()) for k, (m, v) in net.norm_stats().items()}
    with torch.no_grad():
        supplied = run_network(g, x, net.node_weights(), stats, training=True)
        torch.testing.assert_close(supplied, net(x), rtol=0, atol=0)
    for key, (m, v) in net.norm_stats().items():
        torch.testing.assert_close(stats[key][0], m, rtol=0, atol=0)
        torch.testing.assert_close(stats[key][1], v, rtol=0, atol=0)


def test_running_stats_change_only_in_train_mode():
    net = ArchNetwork(nb201_graph(7, cells_per_stage=1))
    before = {k: v.clone() for k, v in net.state_dict().items()}
    net.eval()
    with torch.no_grad():
        net(torch.randn(2, 3, 32, 32))
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    net.train()
    with torch.no_grad():
        net(torch.randn(2, 3, 32, 32))
    assert any(not torch.equal(before[k], v) for k, v in net.state_dict().items() if k.startswith("bn_"))


@pytest.mark.parametrize("make", [lambda: small_classification(4), lambda: small_classification(8),
                                  lambda: nb201_graph_without_none(1), lambda: nb201_graph_without_none(2)])
def test_every_parameter_gets_a_gradient(make):
    net = ArchNetwork(make())
    net(torch.randn(3, 3, 32, 32)).logsumexp(dim=1).sum().backward()
    for name, p in net.params.items():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


def test_gradients_flow_to_supplied_weights():
    g = hand_graph()
    w = {v: {k: torch.randn(s, requires_grad=True) for k, s in p.items()} for v, p in param_shapes(g).items()}
    run_network(g, torch.randn(2, 3, 32, 32), w).sum().backward()
    assert all(t.grad is not None for ws in w.values() for t in ws.values())


# --------------------------------------------------------------------------------- bad weights
def _hand_weights():
    return {v: {k: torch.randn(s) for k, s in p.items()} for v, p in param_shapes(hand_graph()).items()}


@pytest.mark.parametrize("node,name,shape,match", [
    (1, "weight", (3, 4, 3, 3), r"node 1 \(stem_conv\) weight 'weight': got shape \(3, 4, 3, 3\), "
                                r"network needs \(4, 3, 3, 3\)"),
    (2, "weight", (8, 4, 3, 3), r"node 2 \(conv1x1\) weight 'weight': got shape \(8, 4, 3, 3\)"),
    (3, "bias", (1,), r"node 3 \(classifier\) weight 'bias': got shape \(1,\), network needs \(10,\)"),
    (3, "weight", (8, 10), r"node 3 \(classifier\) weight 'weight'"),
])
def test_run_network_with_wrong_weight_shape_fails_clearly(node, name, shape, match):
    w = _hand_weights()
    w[node][name] = torch.randn(shape)
    with pytest.raises(ValueError, match=match):
        run_network(hand_graph(), torch.randn(2, 3, 32, 32), w)


def test_run_network_with_missing_weights_fails_clearly():
    w = _hand_weights()
    del w[2]
    with pytest.raises(ValueError, match=r"node 2 \(conv1x1\): weight 'weight' of shape \(8, 4, 1, 1\) is missing"):
        run_network(hand_graph(), torch.randn(2, 3, 32, 32), w)
    w = _hand_weights()
    del w[3]["bias"]
    with pytest.raises(ValueError, match="'bias' .* is missing"):
        run_network(hand_graph(), torch.randn(2, 3, 32, 32), w)


def test_run_network_with_wrong_input_channels_fails_clearly():
    with pytest.raises(GraphError, match="input declares 3 channels, data has 1"):
        run_network(hand_graph(), torch.randn(2, 1, 32, 32), _hand_weights())


def test_arch_network_rejects_wrong_supplied_weights():
    w = _hand_weights()
    w[2]["weight"] = torch.randn(8, 4)
    with pytest.raises(ValueError, match=r"node 2 weight 'weight': got shape \(8, 4\), network needs \(8, 4, 1, 1\)"):
        ArchNetwork(hand_graph(), weights=w)


def test_strided_ops_are_exactly_the_expected_ones():
    assert {op for op, p in PRIMITIVES.items() if not p.allows_stride} == \
        {"input", "concat", "sum", "classifier", "identity", "zero", "norm_relu"}


def test_arch_network_validates_its_graph():
    bad = ArchGraph([Node("input", 0, 3), Node("stem_conv", 0, 4)], [(0, 1)])
    with pytest.raises(GraphError):
        ArchNetwork(bad)


@pytest.mark.parametrize("space,size", [("classification", 32), ("classification", 33), ("nb201", 32),
                                        ("nb201", 31), ("anytime", 32)])
def test_count_flops_formula_equals_torchs_flop_counter(space, size):
    """count_flops is a formula; node_flops runs the network under FlopCounterMode: every op, stride
    (the 1x7-7x1 conv strides one axis at a time), odd size and scaled node must agree."""
    from ghn_ext.nets import node_flops
    from ghn_ext.spaces import make_sampler
    sampler = make_sampler(space, 7, 5, 8, 1)
    for seed in range(3):
        g = sampler(random.Random(seed))
        assert count_flops(g, (3, size, size)) == sum(node_flops(g, (3, size, size))) > 0


@pytest.mark.parametrize("classes", [0, -3])
def test_a_classifier_without_classes_is_refused(classes):
    """Issue 29: a classifier with 0 channels validated."""
    g = ArchGraph([Node("input", 0, 3), Node("stem_conv", 0, 4), Node("classifier", 1, classes)], [(0, 1), (1, 2)])
    with pytest.raises(GraphError, match="classifier.* needs a positive number of classes"):
        infer_shapes(g)


def test_count_flops_allocates_nothing_for_a_big_network():
    g = cls_space.imagenet_mobile_network(cls_space.Cell(("conv1x1",), ((0, 1),)), 64)
    flops = count_flops(g, (3, 224, 224))
    assert flops > 1e9 and flops % 2 == 0
