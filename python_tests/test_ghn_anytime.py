"""Tests of the GHN on the anytime space (appendix 7.2): scale and exit one-hots in the initial
embeddings, bottlenecks emitted edge by edge from [parent, child] embeddings, sizes that follow the
number of inputs, batching, gradients, initial scale, checkpoints."""
from __future__ import annotations

import math
import random

import pytest
import torch
import torch.nn.functional as F

from ghn_ext.models.ghn import _SCALES, _STRIDES, NUM_FEATURES, EdgePlan, GHNConfig, GraphHyperNetwork, node_features
from ghn_ext.core.graph import GraphBatch, Node
from ghn_ext.nets import exit_schedule, infer_shapes, param_shapes, run_anytime
from ghn_ext.core.primitives import OP_INDEX, OP_NAMES
from ghn_ext.spaces import anytime

torch.set_num_threads(1)
SMALL = dict(tile_channels=8, T=2)


def arch(seed: int, channels: int = 4, **kw):
    return anytime.sample_architecture(random.Random(seed), channels=channels, random_nodes=True, **kw)


def make_ghn(seed: int = 0, **kw) -> GraphHyperNetwork:
    torch.manual_seed(seed)
    return GraphHyperNetwork(GHNConfig(**{"space": "anytime", **SMALL, **kw}))


def images(n=4, seed=0):
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------------------------------ features, config
def test_initial_features_carry_scale_and_exit():
    f = node_features(Node("conv3x3", 1, 32, scale=16, exit=True))
    scale_base = len(OP_NAMES) + len(_STRIDES)
    assert len(f) == NUM_FEATURES and sum(f) == 4  # op, stride, scale, exit
    assert f[OP_INDEX["conv3x3"]] == 1 and f[scale_base + _SCALES.index(16)] == 1 and f[-1] == 1
    for s in (32, 16, 8):
        g = node_features(Node("max_pool3x3", 1, 8, scale=s))
        assert g[scale_base:scale_base + len(_SCALES)] == [float(x == s) for x in _SCALES] and g[-1] == 0


def test_edge_mode_is_on_for_the_anytime_space_only():
    assert GHNConfig(space="anytime").edge_bottlenecks is True
    assert GHNConfig(space="classification").edge_bottlenecks is False
    assert GHNConfig(space="anytime", edge_bottlenecks=False).edge_bottlenecks is False
    names = {n for n, _ in make_ghn().named_parameters()}
    assert {"edge_in.weight", "edge_out.weight"} <= names
    assert not any(n.startswith("edge_") for n, _ in make_ghn(space="classification").named_parameters())


# ------------------------------------------------------------------------------------------ emission
@pytest.mark.parametrize("seed", range(3))
def test_weights_have_the_network_shapes(seed):
    g = arch(seed)
    w = make_ghn()(g)
    shapes = param_shapes(g)
    assert w.keys() == shapes.keys()
    for v, p in shapes.items():
        assert {k: tuple(t.shape) for k, t in w[v].items()} == p


def test_bottleneck_is_the_concatenation_of_edge_pieces():
    g = arch(2, channels=4)
    ghn = make_ghn()
    batch = GraphBatch.from_graphs([g])
    with torch.no_grad():
        h = ghn.propagate(batch, ghn.initial_embeddings(batch))
        w = ghn.emit(batch, ghn.blocks(batch, h), h)[0]
    out, preds, c = infer_shapes(g), g.predecessors(), ghn.config.tile_channels
    checked = 0
    for v, node in enumerate(g.nodes):
        if not node.scale:
            continue
        eb = ghn.edge_blocks(h, [(u, v) for u in preds[v]])[:, :, :, 0, 0]
        total = sum(out[u].channels for u in preds[v])
        start = 0
        for k, u in enumerate(preds[v]):
            cu = out[u].channels
            want = eb[k].repeat(math.ceil(node.channels / c), math.ceil(cu / c))[:node.channels, :cu]
            torch.testing.assert_close(w[v]["bottleneck"][:, start:start + cu, 0, 0],
                                       want * math.sqrt(2.0 / total))
            start += cu
        assert start == total == w[v]["bottleneck"].shape[1]
        checked += len(preds[v]) > 1
    assert checked  # some node has several inputs


def test_edge_plan_follows_the_inputs():
    g = anytime.network(["conv3x3", "conv1x1", "avg_pool3x3"], [16, 32, 8], [[0], [0], [1, 2]],
                        [3, 0, 0], exits=[1, 2, 3], channels=4)
    plan = EdgePlan.build([g, g], [0, len(g)], (3, 32, 32))
    n = len(g)
    # scaled nodes 2 (reads the stem), 4 (the stem), 6 (nodes 2 and 4), in both graphs
    assert plan.edges == [(1, 2), (1, 4), (2, 6), (4, 6), (n + 1, n + 2), (n + 1, n + 4), (n + 2, n + 6),
                          (n + 4, n + 6)]
    assert plan.piece_ptr == [0, 1, 2, 4, 5, 6, 8]
    assert plan.piece_channels == [4, 4, 8, 4] * 2
    assert plan.shapes[8:12] == [16, 12, 1, 1]
    assert plan.scales[2] == pytest.approx(math.sqrt(2 / 12))
    assert [k[:3] for k in plan.keys[:3]] == [(0, 2, "bottleneck"), (0, 4, "bottleneck"), (0, 6, "bottleneck")]


def test_batch_equals_one_by_one():
    ghn = make_ghn()
    gs = [arch(s) for s in range(3)]
    with torch.no_grad():
        together, alone = ghn(gs), [ghn(g) for g in gs]
    for t, a in zip(together, alone):
        assert t.keys() == a.keys()
        for v in t:
            for name in t[v]:
                torch.testing.assert_close(t[v][name], a[v][name], rtol=1e-5, atol=1e-6)


def test_gradients_reach_every_ghn_parameter():
    ghn = make_ghn()
    g = arch(1)
    out = run_anytime(g, images(), ghn(g), exit_schedule(g))
    sum(F.cross_entropy(o, torch.tensor([0, 1, 2, 3])) for o in out).backward()
    for name, p in ghn.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_fresh_bottlenecks_are_near_he_initialisation():
    ghn = make_ghn(seed=1)
    g = anytime.sample_architecture(random.Random(1), channels=8)
    with torch.no_grad():
        w = ghn(g)
    ratios = [w[v]["bottleneck"].std().item() * math.sqrt(w[v]["bottleneck"].shape[1] / 2)
              for v, n in enumerate(g.nodes) if n.scale and w[v]["bottleneck"].numel() >= 64]
    assert ratios and all(0.3 < r < 3 for r in ratios), ratios
    logits = run_anytime(g, images(8), w, exit_schedule(g))
    assert all(0.05 < o.std().item() < 20 for o in logits)


def test_node_mode_ghn_still_emits_bottlenecks():
    g = arch(0)
    w = make_ghn(edge_bottlenecks=False)(g)
    assert all(tuple(w[v][k].shape) == s for v, p in param_shapes(g).items() for k, s in p.items())


def test_save_load_round_trip(tmp_path):
    ghn = make_ghn()
    ghn.save(tmp_path / "ghn.pt")
    again = GraphHyperNetwork.load(tmp_path / "ghn.pt", space="anytime")
    assert again.config.edge_bottlenecks
    g = arch(0)
    with torch.no_grad():
        a, b = ghn(g), again(g)
    for v in a:
        for k in a[v]:
            torch.testing.assert_close(a[v][k], b[v][k], rtol=0, atol=0)


def test_materialize_gives_an_anytime_network_with_every_exit():
    from ghn_ext.nets import AnytimeNetwork

    ghn, g = make_ghn(), arch(3)
    model = ghn.materialize(g)
    assert isinstance(model, AnytimeNetwork)
    x = images(4)
    with torch.no_grad():
        expected = run_anytime(g, x, ghn(g), exit_schedule(g))
        got = model(x)
    assert len(got) == len(expected) == len(model.exit_flops) > 1
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        cheap = model(x, budget=model.exit_flops[1])
    assert len(cheap) == 2 and all(torch.allclose(a, b, atol=1e-5) for a, b in zip(cheap, got))
