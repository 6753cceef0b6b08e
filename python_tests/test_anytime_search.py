"""Tests of ghn_ext.workflows.anytime (MSDNet-style baseline, width matching, ranking by the area under
the GHN-predicted accuracy-FLOPs curve, final training) and of GHN training on anytime networks."""
from __future__ import annotations

import random

import pytest
import torch

from ghn_ext.workflows.anytime import AnytimeTrainConfig, match_width, msdnet_graph, score_anytime, train_anytime
from ghn_ext.core.data import Split
from ghn_ext.workflows.evaluate import curve_area, exit_accuracies
from ghn_ext.core.checkpoints import CheckpointError
from ghn_ext.models.ghn import GHNConfig, GraphHyperNetwork
from ghn_ext.nets import count_flops, exit_schedule, param_shapes
from ghn_ext.spaces import anytime
from ghn_ext.workflows.train import TrainConfig, Trainer, exits_loss, read_log

torch.set_num_threads(1)


def random_split(n=40, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return Split(torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=gen),
                 torch.randint(0, 10, (n,), generator=gen))


# ------------------------------------------------------------------------------------------ baseline
def test_msdnet_graph_structure():
    g = msdnet_graph(layers=3, channels=4, exit_every=2)
    convs = [v for v, n in enumerate(g.nodes) if n.op == "conv3x3"]
    assert len(convs) == 9 and [g.nodes[v].scale for v in convs] == [32, 16, 8] * 3
    # exits: coarsest node of layer 2 (every 2nd) and of the last layer
    assert [v for v in convs if g.nodes[v].exit] == [convs[5], convs[8]]
    preds = g.predecessors()
    layer = lambda li: convs[3 * li:3 * li + 3]  # noqa: E731
    assert preds[layer(0)[0]] == [1]                                # stem
    assert preds[layer(0)[1]] == [layer(0)[0]]                      # the finer node of its layer
    assert preds[layer(2)[0]] == [layer(0)[0], layer(1)[0]]         # dense at the finest scale
    assert preds[layer(2)[2]] == [layer(0)[2], layer(1)[2], layer(2)[1]]
    # bottleneck sizes: 8x8 node of layer 2 concatenates 16 + 16 (8x8) + 8 (16x16) channels
    assert param_shapes(g)[layer(2)[2]]["bottleneck"] == (16, 40, 1, 1)


def test_msdnet_graph_exits_and_errors():
    g = msdnet_graph()
    assert sum(n.exit for n in g.nodes) == 5 and len(exit_schedule(g)) == 5
    with pytest.raises(ValueError, match="must be positive"):
        msdnet_graph(layers=0)


def test_match_width_stays_within_the_budget():
    g = anytime.sample_architecture(random.Random(0), channels=8)
    budget = count_flops(msdnet_graph(channels=8))
    m = match_width(g, budget)
    c = m.nodes[1].channels
    assert count_flops(m) <= budget < count_flops(anytime.with_channels(g, c + 1))
    assert [n.op for n in m.nodes] == [n.op for n in g.nodes]
    with pytest.raises(ValueError, match="even base width 1 needs"):
        match_width(g, 1000)


# ------------------------------------------------------------------------------------------ ranking
def test_score_anytime_ranks_by_area():
    torch.manual_seed(0)
    ghn = GraphHyperNetwork(GHNConfig(space="anytime", block_channels=8, T=1))
    archs = [anytime.sample_architecture(random.Random(s), block_nodes=(4, 3, 2), num_exits=3, channels=4)
             for s in range(2)]
    split = random_split()
    scores = score_anytime(ghn, archs, split, (0, 5e6), image_batch=20)
    weights = ghn(archs)
    for g, w, s in zip(archs, weights, scores):
        sched = exit_schedule(g)
        accs = exit_accuracies(g, w, split, sched, image_batch=20)
        assert s["hash"] == g.stable_hash() and s["exit_flops"] == [e.flops for e in sched]
        assert s["exit_acc"] == accs
        assert s["area"] == pytest.approx(curve_area(s["exit_flops"], accs, 0, 5e6))


# ------------------------------------------------------------------------------------------ training
def test_exits_loss_averages_every_classifier():
    y = torch.tensor([0, 1])
    a, b = torch.tensor([[5.0, 0.0], [0.0, 5.0]]), torch.tensor([[0.0, 5.0], [0.0, 5.0]])
    loss, right = exits_loss([a, b], y)
    ce = torch.nn.functional.cross_entropy
    assert loss.item() == pytest.approx(((ce(a, y) + ce(b, y)) / 2).item()) and right == 1  # the last exit's
    assert exits_loss(a, y)[1] == 2


def test_train_anytime_runs_the_recipe():
    g = anytime.sample_architecture(random.Random(1), block_nodes=(3, 2, 2), num_exits=2, channels=4)
    out = train_anytime(g, AnytimeTrainConfig(epochs=2, batch_size=16), random_split(32), random_split(20, 1))
    assert out["steps"] == 4 and len(out["exit_acc"]) == 2 == len(out["exit_flops"])
    assert all(0 <= a <= 1 for a in out["exit_acc"]) and out["final_loss"] == out["final_loss"]
    with pytest.raises(ValueError, match="no batches: 32 samples, batch_size=64"):  # fewer images than a batch
        train_anytime(g, AnytimeTrainConfig(epochs=1, batch_size=64), random_split(32), random_split(20))
    with pytest.raises(ValueError, match="anytime training epochs must be an integer >= 1, got 0"):
        AnytimeTrainConfig(epochs=0)


def test_ghn_trains_on_random_size_anytime_networks(tmp_path, data_dir):
    cfg = TrainConfig(space="anytime", steps=2, batch_size=8, channels=4, eval_archs=1, eval_images=20,
                      checkpoint_every=1, data_dir=data_dir, ghn=GHNConfig(space="anytime", block_channels=8, T=1))
    counts = {len(g) for s in range(5) for g in [cfg.sampler()(random.Random(s))]}
    assert len(counts) > 1  # random node counts while training
    full = cfg.sampler(evaluation=True)(random.Random(0))
    assert sum(n.scale > 0 for n in full.nodes) == sum(anytime.BLOCK_NODES)
    trainer = Trainer(cfg, tmp_path)
    result = trainer.run(progress=False)
    log = read_log(tmp_path / "train_log.jsonl")
    assert result["done"] and len(log) == 2 and "val_acc" in log[-1]
    assert GraphHyperNetwork.load(tmp_path / "ghn.pt", space="anytime").config.edge_bottlenecks


def test_train_anytime_resumes_exactly(tmp_path):
    g = anytime.sample_architecture(random.Random(2), block_nodes=(3, 2, 1), num_exits=2, channels=4)
    cfg = AnytimeTrainConfig(epochs=2, batch_size=16)
    train, test = random_split(32), random_split(20, 1)
    whole = train_anytime(g, cfg, train, test)
    ckpt = tmp_path / "net.pt"
    assert train_anytime(g, cfg, train, test, checkpoint=ckpt, stop_after=3) is None  # killed mid-epoch 2
    resumed = train_anytime(g, cfg, train, test, checkpoint=ckpt)  # continues from the epoch-1 checkpoint
    assert resumed == whole
    assert train_anytime(g, cfg, train, test, checkpoint=ckpt) == whole  # finished: evaluates only
    with pytest.raises(CheckpointError, match="holds another run"):
        train_anytime(g, AnytimeTrainConfig(epochs=3, batch_size=16), train, test, checkpoint=ckpt)
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="corrupt"):
        train_anytime(g, cfg, train, test, checkpoint=tmp_path / "bad.pt")
