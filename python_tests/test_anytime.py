"""Tests of the anytime space and networks: sampler, scales, concatenation and bottlenecks, exits in
order of cost with cumulative FLOPs, budgets, per-exit accuracy and the area under the curve."""
from __future__ import annotations

import random

import pytest
import torch
import torch.nn.functional as F

from ghn_ext.core.data import Split, normalize
from ghn_ext.workflows.evaluate import accuracy_at, curve_area, exit_accuracies
from ghn_ext.core.graph import ArchGraph, GraphError, Node
from ghn_ext.nets import (AnytimeNetwork, ArchNetwork, NodeShape, count_flops, exit_schedule, infer_shapes, node_flops,
                          param_shapes, run_anytime, run_network)
from ghn_ext.core.primitives import batch_norm, resample
from ghn_ext.spaces import anytime, make_sampler

torch.set_num_threads(1)


# --------------------------------------------------------------------------------- helpers
def hand_graph() -> ArchGraph:
    """Base width 4, one block: stem(4) -> A = conv3x3 @16 (8 ch, exit), B = conv1x1 @32 (4 ch, exit),
    C = avg_pool3x3 @8 (16 ch, exit) reading A and B.

    Graph nodes: 0 input, 1 stem, 2 A, 3 A's classifier, 4 B, 5 B's classifier, 6 C, 7 C's classifier."""
    return anytime.network(["conv3x3", "conv1x1", "avg_pool3x3"], [16, 32, 8], [[0], [0], [1, 2]],
                           [3, 0, 0], exits=[1, 2, 3], channels=4)


# FLOPs by hand, 2 per multiply-add; pooling, resampling, BatchNorm and biases are not counted
STEM = 2 * 32 * 32 * 4 * 27
A = 2 * 16 * 16 * 8 * 4 + 2 * 16 * 16 * 8 * 8 * 9    # bottleneck 4->8, then 3x3 conv 8->8 at 16x16
B = 2 * 32 * 32 * 4 * 4 + 2 * 32 * 32 * 4 * 4        # bottleneck 4->4, then 1x1 conv 4->4 at 32x32
C = 2 * 8 * 8 * 16 * 12                              # bottleneck (8+4)->16 at 8x8, then the pool
HEAD_A, HEAD_B, HEAD_C = 2 * 8 * 10, 2 * 4 * 10, 2 * 16 * 10


def random_graphs(n=4, **kw):
    return [anytime.sample_architecture(random.Random(s), **kw) for s in range(n)]


# --------------------------------------------------------------------------------- search space
def test_sampler_is_seeded_and_follows_the_space():
    g = anytime.sample_architecture(random.Random(3))
    assert g == anytime.sample_architecture(random.Random(3))
    assert g != anytime.sample_architecture(random.Random(4))
    ops = [n for n in g.nodes if n.block > 0 and n.op != "classifier"]
    for b, count in enumerate(anytime.BLOCK_NODES, start=1):
        block = [n for n in ops if n.block == b]
        assert len(block) == count
        assert {n.scale for n in block} <= set(anytime.BLOCK_SCALES[b - 1])
        assert all(n.channels == 16 * 32 // n.scale for n in block)
    assert {n.op for n in ops} <= set(anytime.OPS)
    assert sum(n.exit for n in g.nodes) == anytime.NUM_EXITS == sum(n.op == "classifier" for n in g.nodes)
    assert g.nodes[-1].op == "classifier" and g.nodes[-2].exit  # the last node always has an exit


@pytest.mark.parametrize("seed", range(6))
def test_sampled_nodes_read_the_previous_block_or_their_own(seed):
    g = anytime.sample_architecture(random.Random(seed))
    preds = g.predecessors()
    for v, node in enumerate(g.nodes):
        if node.scale:
            assert preds[v] and all(g.nodes[u].block in (node.block - 1, node.block) for u in preds[v])
        # every node is read by a later node or has an exit (validate() checks the rest)
        assert node.op == "classifier" or g.successors()[v]


def test_random_node_counts_for_ghn_training():
    sampler = make_sampler("anytime", random_nodes=True, channels=8)
    counts = set()
    for s in range(30):
        g = sampler(random.Random(s))
        c = tuple(sum(n.block == b and n.op != "classifier" for n in g.nodes) for b in (1, 2, 3))
        assert all(1 <= k <= m for k, m in zip(c, anytime.BLOCK_NODES))
        assert sum(n.exit for n in g.nodes) == min(anytime.NUM_EXITS, sum(c))
        counts.add(c)
    assert len(counts) > 20


def test_with_channels_keeps_the_architecture():
    g = anytime.sample_architecture(random.Random(1), channels=8)
    wide = anytime.with_channels(g, 12)
    assert [(n.op, n.scale, n.exit) for n in wide.nodes] == [(n.op, n.scale, n.exit) for n in g.nodes]
    assert wide.edges == g.edges and wide.nodes[1].channels == 12
    assert count_flops(wide) > count_flops(g)


@pytest.mark.parametrize("kwargs,match", [
    (dict(block_nodes=(4, 4)), "block_nodes must give 3"),
    (dict(block_nodes=(4, 0, 2)), "block_nodes must give 3"),
    (dict(num_exits=0), "must be positive"),
    (dict(block_nodes=(1, 1, 1), num_exits=4), "4 exits need at least as many nodes"),
])
def test_sampler_rejects_bad_settings(kwargs, match):
    with pytest.raises(ValueError, match=match):
        anytime.sample_architecture(random.Random(0), **kwargs)


@pytest.mark.parametrize("args,match", [
    ((["conv7x7"], [32], [[0]], [1, 0, 0], [1]), "unknown op 'conv7x7'"),
    ((["conv1x1"], [32], [[0]], [0, 1, 0], [1]), r"scale 32 not in \(16, 8\)"),
    ((["conv1x1"], [8], [[1]], [1, 0, 0], [1]), "must be earlier nodes"),
    ((["conv1x1"], [8], [[]], [1, 0, 0], [1]), "must be earlier nodes"),
    ((["conv1x1", "conv1x1"], [8], [[0]], [1, 0, 0], [1]), "need as many ops, scales and input lists"),
])
def test_network_rejects_bad_genotypes(args, match):
    with pytest.raises(GraphError, match=match):
        anytime.network(*args)


@pytest.mark.parametrize("nodes,edges,match", [
    ([Node("input", 0, 3), Node("stem_conv", 0, 4), Node("conv1x1", 0, 4, exit=True), Node("conv1x1", 0, 4),
      Node("classifier", 0, 10)], [(0, 1), (1, 2), (2, 3), (3, 4)], "marked as an exit but feeds no classifier"),
    ([Node("input", 0, 3), Node("stem_conv", 0, 4), Node("classifier", 0, 10, scale=8)], [(0, 1), (1, 2)],
     "only stride-1 operation nodes can have a scale"),
    ([Node("input", 0, 3), Node("stem_conv", 0, 4), Node("conv1x1", 0, 4, stride=2, scale=8),
      Node("classifier", 0, 10)], [(0, 1), (1, 2), (2, 3)], "only stride-1 operation nodes"),
    ([Node("input", 0, 3), Node("stem_conv", 0, 4), Node("conv1x1", 0, 4, scale=-8),
      Node("classifier", 0, 10)], [(0, 1), (1, 2), (2, 3)], "negative scale"),
])
def test_validate_rejects_bad_scales_and_exits(nodes, edges, match):
    with pytest.raises(GraphError, match=match):
        ArchGraph(nodes, edges).validate()


# --------------------------------------------------------------------------------- scales
def test_resample_pools_down_and_repeats_up():
    x = torch.arange(16.0).view(1, 1, 4, 4)
    torch.testing.assert_close(resample(x, 2), torch.tensor([[[[2.5, 4.5], [10.5, 12.5]]]]))
    up = resample(x, 8)
    assert up.shape == (1, 1, 8, 8)
    torch.testing.assert_close(up, x.repeat_interleave(2, 2).repeat_interleave(2, 3))
    assert resample(x, 4) is x


@pytest.mark.parametrize("size,match", [(24, "cannot resample a 24x24 input"), (48, "cannot resample")])
def test_scale_must_be_a_power_of_two_ratio_of_the_input(size, match):
    g = ArchGraph([Node("input", 0, 3), Node("stem_conv", 0, 4), Node("conv1x1", 0, 4, scale=8),
                   Node("classifier", 0, 10)], [(0, 1), (1, 2), (2, 3)]).validate()
    assert infer_shapes(g, (3, 32, 32))[2] == NodeShape(4, 8, 8)
    assert infer_shapes(g, (3, 4, 4))[2] == NodeShape(4, 8, 8)  # upsampled
    with pytest.raises(GraphError, match=match):
        infer_shapes(g, (3, size, size))


def test_non_square_input_is_rejected():
    g = ArchGraph([Node("input", 0, 3), Node("stem_conv", 0, 4), Node("conv1x1", 0, 4, scale=8),
                   Node("classifier", 0, 10)], [(0, 1), (1, 2), (2, 3)]).validate()
    with pytest.raises(GraphError, match="cannot resample a 32x16 input"):
        infer_shapes(g, (3, 32, 16))


def test_scaled_node_matches_manual_computation():
    g = hand_graph()
    torch.manual_seed(0)
    w = {v: {k: torch.randn(s) for k, s in p.items()} for v, p in param_shapes(g).items()}
    x = torch.randn(3, 3, 32, 32)
    acts = {2: None, 4: None, 6: None}
    run_network(g, x, w, capture=acts)
    a, b = acts[2], acts[4]
    assert a.shape == (3, 8, 16, 16) and b.shape == (3, 4, 32, 32)
    cat = torch.cat([F.avg_pool2d(a, 2), F.avg_pool2d(b, 4)], dim=1)  # predecessor order: A, then B
    y = batch_norm(F.conv2d(F.relu(cat), w[6]["bottleneck"]), None, True)
    expect = F.avg_pool2d(y, 3, stride=1, padding=1, count_include_pad=False)
    torch.testing.assert_close(acts[6], expect)
    # and a conv node: bottleneck, then ReLU-conv-BN
    stem = F.conv2d(x, w[1]["weight"], padding=1)
    stem = batch_norm(stem, None, True)
    y = batch_norm(F.conv2d(F.relu(F.avg_pool2d(stem, 2)), w[2]["bottleneck"]), None, True)
    torch.testing.assert_close(acts[2], batch_norm(F.conv2d(F.relu(y), w[2]["weight"], padding=1), None, True))


# --------------------------------------------------------------------------------- concatenation, bottlenecks
def test_hand_graph_bottleneck_sizes():
    p = param_shapes(hand_graph())
    assert p[2] == {"bottleneck": (8, 4, 1, 1), "weight": (8, 8, 3, 3)}
    assert p[4] == {"bottleneck": (4, 4, 1, 1), "weight": (4, 4, 1, 1)}
    assert p[6] == {"bottleneck": (16, 12, 1, 1)}  # a pool's only weight is its bottleneck
    assert p[7] == {"weight": (10, 16), "bias": (10,)}


@pytest.mark.parametrize("seed", range(4))
def test_random_graph_concat_and_bottleneck_sizes(seed):
    g = anytime.sample_architecture(random.Random(seed), channels=4)
    shapes, params, preds = infer_shapes(g), param_shapes(g), g.predecessors()
    for v, node in enumerate(g.nodes):
        if not node.scale:
            continue
        assert shapes[v] == NodeShape(node.channels, node.scale, node.scale)
        assert params[v]["bottleneck"] == (node.channels, sum(shapes[u].channels for u in preds[v]), 1, 1)
        if "weight" in params[v]:
            k = int(node.op[-1])
            assert params[v]["weight"] == (node.channels, node.channels, k, k)
        else:
            assert node.op in ("max_pool3x3", "avg_pool3x3") and set(params[v]) == {"bottleneck"}
    # the real forward agrees with the inferred shapes
    net = ArchNetwork(g)
    acts = {v: None for v, n in enumerate(g.nodes) if n.scale}
    run_network(g, torch.randn(2, 3, 32, 32), net.node_weights(), capture=acts)
    for v, out in acts.items():
        assert tuple(out.shape[1:]) == (shapes[v].channels, shapes[v].height, shapes[v].width), v


def test_running_statistics_of_bottleneck_and_op():
    g = hand_graph()
    net = ArchNetwork(g)
    assert sorted(k for k in net.norm_stats() if k[0] in (2, 6)) == [(2, 0), (2, 1), (6, 0)]
    before = {k: m.clone() for k, (m, _) in net.norm_stats().items()}
    net.train()(torch.randn(4, 3, 32, 32))
    assert all(not torch.equal(before[k], m) for k, (m, _) in net.norm_stats().items())
    net.eval()
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(net(x)[0], net(x)[0])


# --------------------------------------------------------------------------------- exits and FLOPs
def test_node_flops_by_hand():
    f = node_flops(hand_graph())
    assert f == [0, STEM, A, HEAD_A, B, HEAD_B, C, HEAD_C]
    assert sum(f) == count_flops(hand_graph())


def test_exit_schedule_by_hand():
    s = exit_schedule(hand_graph())
    # alone, A's exit costs STEM + A and B's STEM + B (cheaper, though B comes later in the graph):
    # B first; then A's exit adds A, C's would add A and C: A next, C last
    assert [e.head for e in s] == [5, 3, 7]
    assert [e.nodes for e in s] == [(0, 1, 4, 5), (2, 3), (6, 7)]
    assert [e.flops for e in s] == [STEM + B + HEAD_B, STEM + B + HEAD_B + A + HEAD_A,
                                    STEM + A + B + C + HEAD_A + HEAD_B + HEAD_C]
    assert s[-1].flops == count_flops(hand_graph())


@pytest.mark.parametrize("seed", range(3))
def test_random_schedule_is_cumulative_and_complete(seed):
    g = anytime.sample_architecture(random.Random(seed), channels=4)
    s = exit_schedule(g)
    assert sorted(e.head for e in s) == [v for v, n in enumerate(g.nodes) if n.op == "classifier"]
    assert all(a.flops < b.flops for a, b in zip(s, s[1:]))
    nodes = [v for e in s for v in e.nodes]
    assert sorted(nodes) == list(range(len(g)))          # every node computed exactly once
    assert s[-1].flops == count_flops(g)


def test_budget_stops_before_the_first_unaffordable_exit():
    g = hand_graph()
    net = AnytimeNetwork(g).eval()
    f = net.exit_flops
    x = torch.randn(2, 3, 32, 32)
    full = net(x)
    assert len(full) == 3 and all(o.shape == (2, 10) for o in full)
    assert net(x, budget=f[0] - 1) == []
    for k, budget in enumerate([f[0], f[1] - 1, f[1], f[2], 10 * f[2]]):
        out = net(x, budget=budget)
        assert len(out) == [1, 1, 2, 3, 3][k]
        for got, want in zip(out, full):  # stopping early changes nothing about the exits reached
            torch.testing.assert_close(got, want)
    with pytest.raises(ValueError, match="budget must be non-negative"):
        net(x, budget=-1)


def test_budget_skips_the_nodes_it_does_not_need():
    g = hand_graph()
    s = exit_schedule(g)
    w = ArchNetwork(g).node_weights()
    seen = []
    order = [v for e in s[:1] for v in e.nodes]
    run_network(g, torch.randn(2, 3, 32, 32), w, order=order, on_node=seen.append)
    assert seen == [0, 1, 4, 5]
    assert len(run_anytime(g, torch.randn(2, 3, 32, 32), w, s, budget=s[0].flops)) == 1


@pytest.mark.parametrize("order,match", [([0, 2], r"computes node 2 before its inputs \[1\]"),
                                         ([0, 0], "twice or out of range"), ([9], "out of range")])
def test_run_network_rejects_bad_orders(order, match):
    g = hand_graph()
    with pytest.raises(ValueError, match=match):
        run_network(g, torch.randn(1, 3, 32, 32), ArchNetwork(g).node_weights(), order=order)


def test_anytime_network_trains_every_exit():
    g = anytime.sample_architecture(random.Random(0), block_nodes=(3, 2, 2), num_exits=3, channels=4)
    net = AnytimeNetwork(g)
    out = net(torch.randn(4, 3, 32, 32))
    sum(F.cross_entropy(o, torch.tensor([0, 1, 2, 3])) for o in out).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters())


# --------------------------------------------------------------------------------- accuracy and area
def test_accuracy_at_is_a_step_function():
    flops, accs = [10, 20, 40], [0.3, 0.5, 0.6]
    assert [accuracy_at(flops, accs, b) for b in (5, 10, 19, 20, 39, 40, 99)] == [0, .3, .3, .5, .5, .6, .6]


def test_curve_area_by_hand():
    flops, accs = [10, 20, 40], [0.3, 0.5, 0.6]
    # [0, 10): 0; [10, 20): 0.3; [20, 40): 0.5; [40, 50]: 0.6
    assert curve_area(flops, accs, 0, 50, normalize_range=False) == pytest.approx(3 + 10 + 6)
    assert curve_area(flops, accs, 0, 50) == pytest.approx(19 / 50)
    # a range inside one step, one starting mid-step
    assert curve_area(flops, accs, 22, 30) == pytest.approx(0.5)
    assert curve_area(flops, accs, 15, 25) == pytest.approx((5 * 0.3 + 5 * 0.5) / 10)
    # cheaper exits enlarge the area at equal accuracy
    assert curve_area([5, 20, 40], accs, 0, 50) > curve_area(flops, accs, 0, 50)


@pytest.mark.parametrize("args,match", [(([], [], 0, 1), "at least one exit"),
                                        (([1, 2], [0.1], 0, 1), "one accuracy per exit"),
                                        (([2, 1], [0.1, 0.2], 0, 3), "non-decreasing"),
                                        (([1], [0.1], 3, 3), "lo < hi")])
def test_curve_area_rejects_bad_input(args, match):
    with pytest.raises(ValueError, match=match):
        curve_area(*args)


def test_exit_accuracies_count_each_exit():
    g = hand_graph()
    net = ArchNetwork(g)
    gen = torch.Generator().manual_seed(0)
    split = Split(torch.randint(0, 256, (30, 3, 32, 32), dtype=torch.uint8, generator=gen),
                  torch.randint(0, 10, (30,), generator=gen))
    s = exit_schedule(g)
    accs = exit_accuracies(g, net.node_weights(), split, s, image_batch=10)
    want = []
    with torch.no_grad():
        outs = [run_anytime(g, normalize(split.images[i:i + 10]), net.node_weights(), s) for i in (0, 10, 20)]
    for k in range(3):
        correct = sum(int((o[k].argmax(1) == split.labels[i:i + 10]).sum()) for o, i in zip(outs, (0, 10, 20)))
        want.append(correct / 30)
    assert accs == want and len(accs) == 3


def test_dot_shows_scales_and_exits():
    dot = hand_graph().to_dot()
    assert 'label="conv3x3\\n8ch @16px", fillcolor="#f4b6b6"' in dot  # an exit
    assert "@8px" in dot and "@32px" in dot
