"""Tests of ghn_ext.workflows.anytime (MSDNet-style baseline, width matching, ranking by the area under
the GHN-predicted accuracy-FLOPs curve, final training, and the search and final training that
`ghn anytime search|train-final` run, through the Python API) and of GHN training on anytime networks."""
from __future__ import annotations

import json
import random
from dataclasses import asdict

import pytest
import torch

from ghn_ext.workflows.anytime import (
    AnytimeFinalConfig,
    AnytimeSearchConfig,
    AnytimeTrainConfig,
    match_width,
    msdnet_graph,
    rank_by_area,
    run_anytime_search,
    score_anytime,
    train_anytime,
    train_final_anytime,
)
from ghn_ext.core.data import Split
from ghn_ext.core.graph import ArchGraph
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
    ghn = GraphHyperNetwork(GHNConfig(space="anytime", tile_channels=8, T=1))
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
                      checkpoint_every=1, data_dir=data_dir, ghn=GHNConfig(space="anytime", tile_channels=8, T=1))
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


# ------------------------------------------------------------------------------ search and final training
def tiny_ghn(seed=0):
    torch.manual_seed(seed)
    return GraphHyperNetwork(GHNConfig(space="anytime", tile_channels=8, T=1))


def count_scored(monkeypatch):
    """The architectures score_anytime is asked to score, as run_anytime_search calls it."""
    import ghn_ext.workflows.anytime as workflow
    scored = []
    real = workflow.score_anytime

    def counted(ghn, archs, *args, **kwargs):
        scored.extend(g.stable_hash() for g in archs)
        return real(ghn, archs, *args, **kwargs)

    monkeypatch.setattr(workflow, "score_anytime", counted)
    return scored


def test_configs_check_their_fields_and_give_the_area_range():
    cfg = AnytimeSearchConfig(channels=4, baseline_layers=2)
    assert cfg.baseline().to_dict() == msdnet_graph(2, 4, 2).to_dict()
    assert cfg.area_range() == (0.0, float(count_flops(msdnet_graph(2, 4, 2))))
    assert AnytimeFinalConfig(flops_range=(0, 5e6)).area_range() == (0.0, 5e6)
    other = msdnet_graph(3, 4, 1)
    assert cfg.area_range(other) == (0.0, float(count_flops(other)))  # a baseline built already
    assert AnytimeFinalConfig().training == AnytimeTrainConfig()
    for bad, match in [(lambda: AnytimeSearchConfig(num_archs=0), "anytime search num_archs must be an integer >= 1"),
                       (lambda: AnytimeSearchConfig(baseline_layers=0), "anytime search baseline_layers"),
                       (lambda: AnytimeSearchConfig(seed=-1), "anytime search seed"),
                       (lambda: AnytimeSearchConfig(flops_range=(1.0,)), "flops_range must be"),
                       (lambda: AnytimeFinalConfig(rank=-1), "anytime final training rank"),
                       (lambda: AnytimeFinalConfig(test_images=0), "anytime final training test_images"),
                       (lambda: AnytimeFinalConfig(training={"epochs": 1}), "must be an AnytimeTrainConfig")]:
        with pytest.raises(ValueError, match=match):
            bad()


def test_rank_by_area_takes_the_areas_from_the_curves():
    records = [{"index": 0, "exit_flops": [1, 5], "exit_acc": [0.1, 0.9], "area": 0.0},
               {"index": 1, "exit_flops": [2, 3], "exit_acc": [0.5, 0.6], "area": 1.0},
               {"index": 2, "exit_flops": [2, 3], "exit_acc": [0.5, 0.6], "area": 0.5}]
    wide, narrow = rank_by_area(records, (0, 20)), rank_by_area(records, (0, 4))
    assert [r["index"] for r in wide] == [0, 1, 2] and [r["index"] for r in narrow] == [1, 2, 0]  # ties by index
    assert narrow[0]["area"] == pytest.approx(curve_area([2, 3], [0.5, 0.6], 0, 4))
    assert records[0]["area"] == 0.0  # the records themselves are left as they were


def test_run_anytime_search_ranks_resumes_and_reranks(tmp_path, data_dir, monkeypatch):
    scored = count_scored(monkeypatch)
    ghn, out = tiny_ghn(), tmp_path / "search"

    def search(**kw):
        cfg = AnytimeSearchConfig(**{"num_archs": 3, "val_images": 20, "baseline_layers": 2, "archs_per_batch": 2,
                                     "channels": 4, "data_dir": data_dir, **kw})
        ranking = run_anytime_search(ghn, out, cfg, progress=False)
        written = json.loads((out / "ranking.json").read_text())
        assert written["ranking"] == ranking and written["flops_range"] == list(cfg.area_range())
        return ranking

    first = search()
    assert len(scored) == 3 and (out / "scores.jsonl").is_file() and not ghn.training
    assert [r["area"] for r in first] == sorted((r["area"] for r in first), reverse=True)
    assert sorted(r["index"] for r in first) == [0, 1, 2] and all(r["images"] == 20 for r in first)
    assert all(ArchGraph.from_dict(r["graph"]).stable_hash() == r["hash"] for r in first)
    grown = search(num_archs=5)  # the first 3 are read back, only 2 more scored
    assert len(scored) == 5 and len(set(scored)) == 5 and len(grown) == 5
    assert {r["hash"] for r in first} <= {r["hash"] for r in grown}
    hi = AnytimeSearchConfig(channels=4, baseline_layers=2).area_range()[1] / 4
    narrow = search(num_archs=5, flops_range=(0, hi))  # nothing scored again; areas over the new range
    assert len(scored) == 5 and narrow == rank_by_area(grown, (0, hi))
    search(num_archs=5, val_images=40)  # curves on other images: scored again
    assert len(scored) == 10
    run_anytime_search(tiny_ghn(1), out, AnytimeSearchConfig(num_archs=2, val_images=40, baseline_layers=2,
                                                             channels=4, data_dir=data_dir), progress=False)
    assert len(scored) == 12  # another GHN's curves: scored again


def test_run_anytime_search_wants_an_anytime_ghn(tmp_path):
    ghn = GraphHyperNetwork(GHNConfig(space="classification", tile_channels=8, T=1))
    with pytest.raises(ValueError, match="needs a GHN of the anytime space"):
        run_anytime_search(ghn, tmp_path, AnytimeSearchConfig(num_archs=1))


def test_train_final_anytime_trains_both_networks_and_resumes(tmp_path, data_dir):
    archs = [anytime.sample_architecture(random.Random(s), block_nodes=(3, 2, 2), num_exits=2, channels=4)
             for s in range(2)]
    ranking = tmp_path / "ranking.json"
    ranking.write_text(json.dumps({"ranking": [{"graph": g.to_dict()} for g in archs]}))
    cfg = AnytimeFinalConfig(rank=1, channels=4, baseline_layers=2, test_images=50, data_dir=data_dir,
                             training=AnytimeTrainConfig(epochs=1, batch_size=16, train_images=32))
    trained = []
    out = tmp_path / "final"
    result = train_final_anytime(ranking, out, cfg, progress=False,
                                 on_trained=lambda name, res: trained.append((name, dict(res))))
    assert [name for name, _ in trained] == ["searched", "msdnet"]
    assert json.loads((out / "result.json").read_text()) == json.loads(json.dumps(result))
    assert result["flops_range"] == list(cfg.area_range()) and result["config"] == asdict(cfg.training)
    searched = ArchGraph.from_dict(result["searched_graph"])
    assert [n.op for n in searched.nodes] == [n.op for n in archs[1].nodes]  # the rank-1 one, at another width
    assert count_flops(searched) <= count_flops(cfg.baseline()) == result["msdnet"]["exit_flops"][-1]
    assert result["searched"]["channels"] == searched.nodes[1].channels and result["msdnet"]["channels"] == 4
    for name, res in trained:
        assert res == result[name]
        assert res["area"] == pytest.approx(curve_area(res["exit_flops"], res["exit_acc"], *cfg.area_range()))
    assert (out / "curves.png").stat().st_size > 0
    assert (out / "searched.pt").is_file() and (out / "msdnet.pt").is_file()
    assert train_final_anytime(ranking, out, cfg, progress=False) == result  # trained: evaluated again only
    with pytest.raises(FileNotFoundError, match="ranking file .*missing.json does not exist"):
        train_final_anytime(tmp_path / "missing.json", out, cfg)
    with pytest.raises(ValueError, match="--rank 2 is outside the ranking's 2 architectures"):
        train_final_anytime(ranking, out, AnytimeFinalConfig(rank=2))
