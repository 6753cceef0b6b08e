"""Tests of ghn_ext.studies.correlate: rank correlations against hand-computed values, the resumable prediction
cache, the table and plot, and the `ghn correlate` command on a tiny ground truth."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from ghn_ext.cli import main
from ghn_ext.studies.correlate import PredictionCache, Predictor, correlate, markdown_table, pearson_interval, rank_correlations
from ghn_ext.models.ghn import GHNConfig, GraphHyperNetwork
from ghn_ext.studies.groundtruth import Protocol, groundtruth_architectures, run_groundtruth
from ghn_ext.models.oneshot import OneShotConfig, OneShotModel


def test_rank_correlations_by_hand():
    r = rank_correlations([1, 2, 3, 4], [10, 20, 30, 40])
    assert r == pytest.approx({"pearson": 1.0, "pearson_top": math.nan, "spearman": 1.0, "kendall": 1.0},
                              nan_ok=True)  # top half has 2 < 3 points
    assert rank_correlations([4, 3, 2, 1], [1, 2, 3, 4])["kendall"] == pytest.approx(-1.0)
    # pred 1,2,3 vs true 1,3,2: concordant pairs (1,2), (1,3); discordant (2,3): tau = (2-1)/3
    assert rank_correlations([1, 2, 3], [1, 3, 2])["kendall"] == pytest.approx(1 / 3)
    pred, true = [0.1, 0.4, 0.2, 0.9, 0.5, 0.3, 0.8], [0.2, 0.3, 0.1, 0.8, 0.7, 0.6, 0.9]
    r = rank_correlations(pred, true)
    assert r["pearson"] == pytest.approx(np.corrcoef(pred, true)[0, 1])
    top = [i for i, t in enumerate(true) if t > np.mean(true)]  # 0.8, 0.7, 0.6, 0.9
    assert r["pearson_top"] == pytest.approx(np.corrcoef([pred[i] for i in top], [true[i] for i in top])[0, 1])


def test_constant_predictor_gives_nan_not_an_error():
    r = rank_correlations([0.1, 0.1, 0.1, 0.1], [0.2, 0.3, 0.4, 0.5])
    assert all(math.isnan(v) for v in r.values())


def test_too_few_scores():
    with pytest.raises(ValueError, match="at least 3 paired scores"):
        rank_correlations([1, 2], [1, 2])


TINY = Protocol(num_nodes=3, num_blocks=1, channels=4, train_images=64, epochs=1, batch_size=32, val_images=100)


def fake_records(n):
    archs = groundtruth_architectures(TINY, n)
    return archs, [{"index": i, "hash": g.stable_hash(), "val_acc": 0.1 + 0.01 * i} for i, g in enumerate(archs)]


def test_correlate_writes_table_plot_and_resumes(tmp_path):
    archs, records = fake_records(6)
    acc = {r["hash"]: r["val_acc"] for r in records}
    good = Predictor("good", lambda g: acc[g.stable_hash()] * 2, initial_seconds=3600)
    bad = Predictor("reversed", lambda g: -acc[g.stable_hash()])
    rows = correlate([good, bad], archs, records, tmp_path, progress=False)
    assert [r["predictor"] for r in rows] == ["good", "reversed"]
    assert rows[0]["pearson"] == pytest.approx(1.0) and rows[1]["spearman"] == pytest.approx(-1.0)
    assert rows[0]["initial_hours"] == pytest.approx(1.0)
    assert (tmp_path / "scatter.png").stat().st_size > 0
    assert "| good | 1.000 (1.00, 1.00) | 1.000 | 1.000 |" in (tmp_path / "table.md").read_text()  # top half: too few
    assert [r["predictor"] for r in json.loads((tmp_path / "table.json").read_text())] == ["good", "reversed"]

    def fail(g):
        raise AssertionError("cached scores must not be recomputed")

    again = correlate([Predictor("good", fail, 3600)], archs, records, tmp_path, progress=False)
    assert again[0]["pearson"] == pytest.approx(1.0)
    # a predictor scored earlier keeps its row; one scored on only some architectures has none
    assert [r["predictor"] for r in again] == ["good", "reversed"]
    partial = correlate([Predictor("partial", lambda g: 0.5)], archs[:4], records[:4], tmp_path / "p", progress=False)
    assert [r["predictor"] for r in partial] == ["partial"]
    with pytest.raises(ValueError, match="nothing to tabulate"):
        correlate([], archs, records, tmp_path / "p", progress=False)


def test_processes_share_one_cache(tmp_path):
    """Two caches on one file, as two `ghn correlate` processes: neither loses what the other wrote, and an
    architecture the other scored meanwhile is not scored again."""
    archs, _ = fake_records(4)
    path = tmp_path / "predictions.json"
    first, second = PredictionCache(path), PredictionCache(path)
    scored = []

    def score_while_the_other_runs(g):
        if not scored:  # the second process scores every architecture during the first one's first
            second.run(Predictor("p", lambda g: 0.5), archs, progress=False)
            second.run(Predictor("q", lambda g: 0.25), archs, progress=False)
        scored.append(g.stable_hash())
        return 0.5

    entry = first.run(Predictor("p", score_while_the_other_runs), archs, progress=False)
    assert scored == [archs[0].stable_hash()]
    assert entry["scores"].keys() == {g.stable_hash() for g in archs}
    on_disk = json.loads(path.read_text())
    assert set(on_disk) == {"p", "q"} and len(on_disk["q"]["scores"]) == 4


def test_damaged_cache(tmp_path):
    archs, records = fake_records(3)
    (tmp_path / "predictions.json").write_text("{oops")
    with pytest.raises(ValueError, match="damaged"):
        correlate([Predictor("x", lambda g: 0.5)], archs, records, tmp_path, progress=False)


def test_markdown_table():
    row = {"predictor": "GHN", "pearson": 0.7, "pearson_top": 0.5, "spearman": 0.6, "kendall": 0.4,
           "pearson_ci": (0.52, 0.82), "pearson_top_ci": (0.13, 0.75), "initial_hours": 0.25, "seconds_per_arch": 1.5}
    assert (markdown_table([row]).splitlines()[2]
            == "| GHN | 0.700 (0.52, 0.82) | 0.500 (0.13, 0.75) | 0.600 | 0.400 | 0.250 | 1.50 |")


def test_pearson_interval():
    # R 0.5 over 28 pairs: atanh(0.5) = 0.5493, +-1.96/5 gives tanh(0.1573) and tanh(0.9413)
    assert pearson_interval(0.5, 28) == pytest.approx((0.1560, 0.7357), abs=1e-3)
    lo, hi = pearson_interval(0.5, 103)
    assert 0.33 < lo < 0.5 < hi < 0.64  # narrower with more pairs
    assert pearson_interval(-0.3, 50) == pytest.approx(tuple(-x for x in reversed(pearson_interval(0.3, 50))))
    assert pearson_interval(1.0, 10)[1] == pytest.approx(1.0)  # a perfect R stays finite
    assert all(math.isnan(x) for x in pearson_interval(math.nan, 50) + pearson_interval(0.5, 3))


def test_cli(data_dir, tmp_path, capsys):
    gt = tmp_path / "gt.json"
    run_groundtruth(TINY, gt, 3, data_dir, progress=False)
    GraphHyperNetwork(GHNConfig(tile_channels=4, T=1)).save(tmp_path / "ghn.pt")
    out = tmp_path / "corr"
    assert main(["correlate", "--groundtruth", str(gt), "--ghn", f"tiny={tmp_path / 'ghn.pt'}", "--sgd-steps", "1",
                 "--out", str(out), "--data-dir", data_dir, "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "| tiny |" in printed and "| SGD-1 |" in printed
    assert (out / "scatter.png").exists()
    # no predictor: the folder's cached scores against the (here: same) ground truth, no data needed
    assert main(["correlate", "--groundtruth", str(gt), "--out", str(out), "--data-dir", str(tmp_path / "no-data"),
                 "--quiet"]) == 0
    assert capsys.readouterr().out.split("table and")[0] == printed.split("table and")[0]
    assert main(["correlate", "--groundtruth", str(gt), "--out", str(tmp_path / "empty"), "--quiet"]) == 2
    assert "nothing to compare" in capsys.readouterr().err
    assert main(["correlate", "--groundtruth", str(tmp_path / "none.json"), "--sgd-steps", "1", "--out", str(out)]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_cli_indices_tabulate_part_of_the_ground_truth(tmp_path, capsys):
    """--indices START:STOP: only those architectures, e.g. ones added after the predictors were chosen."""
    from dataclasses import asdict

    archs, records = fake_records(6)
    gt = tmp_path / "gt.json"
    gt.write_text(json.dumps({"protocol": asdict(TINY), "results": {r["hash"]: r for r in records}}))
    out = tmp_path / "corr"
    out.mkdir()
    # right on the first three architectures, reversed on the last three
    scores = {r["hash"]: {"score": r["val_acc"] * (1 if r["index"] < 3 else -1), "seconds": 1.0} for r in records}
    (out / "predictions.json").write_text(json.dumps({"p": {"initial_seconds": 0, "scores": scores}}))

    def pearson(indices):
        assert main(["correlate", "--groundtruth", str(gt), "--out", str(out), "--indices", indices, "--quiet"]) == 0
        return json.loads((out / "table.json").read_text())[0]["pearson"]

    assert pearson(":3") == pytest.approx(1.0) and pearson("3:") == pytest.approx(-1.0)
    assert pearson("0:6") == pytest.approx(pearson(":"))
    capsys.readouterr()
    assert main(["correlate", "--groundtruth", str(gt), "--out", str(out), "--indices", "4:", "--quiet"]) == 2
    assert "selects 2 of the ground truth's 6 architectures" in capsys.readouterr().err
    for bad in ["3:2", "x:", "5"]:
        with pytest.raises(SystemExit):
            main(["correlate", "--groundtruth", str(gt), "--out", str(out), "--indices", bad])
        assert "expected START:STOP" in capsys.readouterr().err


def test_finetuned_from_zero_steps_scores_like_the_ghn(data_dir):
    """GHN+SGD-k starts from the generated weights: with no step and batch statistics it is the GHN's
    own score; with steps it trains them (and differs from SGD-k from scratch)."""
    from ghn_ext.studies.correlate import finetuned_predictor, model_predictor, sgd_predictor
    from ghn_ext.core.data import cifar10_splits

    splits = cifar10_splits(data_dir)
    train, val = splits.train.head(TINY.train_images), splits.val.head(200)
    ghn = GraphHyperNetwork(GHNConfig(tile_channels=4, T=1))
    graph = groundtruth_architectures(TINY, 1)[0]
    ghn_score = model_predictor("g", ghn, val, "no-log/ghn.pt").score(graph)
    assert finetuned_predictor("g", ghn, 0, TINY, train, val, "no-log/ghn.pt", batch_stats=True).score(graph) == ghn_score
    trained = finetuned_predictor("g", ghn, 2, TINY, train, val, "no-log/ghn.pt", batch_stats=True)
    scratch = sgd_predictor(2, TINY, train, val, batch_stats=True)
    assert (trained.name, scratch.name) == ("g+SGD-2 (batch stats)", "SGD-2 (batch stats)")
    assert trained.score(graph) != scratch.score(graph)


def test_sgd_seed_reaches_the_runs_and_names_the_rows(monkeypatch):
    """--sgd-seed: SGD-k and NAME+SGD-k train with that seed; a row of another seed than the protocol's
    says so, one of the protocol's own seed keeps the plain name (and its cached scores)."""
    import ghn_ext.studies.correlate as C

    seeds = []
    monkeypatch.setattr(C, "train_briefly", lambda *a, seed, **k: seeds.append(seed) or 0.5)
    graph = groundtruth_architectures(TINY, 1)[0]
    ghn = GraphHyperNetwork(GHNConfig(tile_channels=4, T=1))
    rows = [C.sgd_predictor(2, TINY, None, None, batch_stats=True, seed=TINY.seed + 1),
            C.sgd_predictor(2, TINY, None, None, seed=TINY.seed),
            C.finetuned_predictor("g", ghn, 2, TINY, None, None, "no-log/ghn.pt", batch_stats=True, seed=7),
            C.finetuned_predictor("g", ghn, 2, TINY, None, None, "no-log/ghn.pt")]
    assert [p.name for p in rows] == [f"SGD-2 (batch stats), SGD seed {TINY.seed + 1}", "SGD-2",
                                      "g+SGD-2 (batch stats), SGD seed 7", "g+SGD-2"]
    for p in rows:
        p.score(graph)
    assert seeds == [TINY.seed + 1, TINY.seed, 7, TINY.seed]


def test_cli_finetuned_rows_and_their_errors(data_dir, tmp_path, capsys):
    gt = tmp_path / "gt.json"
    run_groundtruth(TINY, gt, 3, data_dir, progress=False)
    GraphHyperNetwork(GHNConfig(tile_channels=4, T=1)).save(tmp_path / "ghn.pt")
    args = ["correlate", "--groundtruth", str(gt), "--out", str(tmp_path / "corr"), "--data-dir", data_dir, "--quiet"]
    OneShotModel(OneShotConfig(num_nodes=TINY.num_nodes, num_blocks=TINY.num_blocks,
                               channels=TINY.channels)).save(tmp_path / "oneshot.pt")
    assert main(args + ["--ghn", f"tiny={tmp_path / 'ghn.pt'}", "--oneshot", f"os={tmp_path / 'oneshot.pt'}",
                        "--finetune-steps", "1", "--sgd-steps", "1", "--batch-stats"]) == 0
    printed = capsys.readouterr().out
    for row in ("tiny", "tiny+SGD-1 (batch stats)", "os", "os+SGD-1 (batch stats)", "SGD-1 (batch stats)"):
        assert f"| {row} |" in printed
    assert main(args + ["--ghn", f"tiny={tmp_path / 'ghn.pt'}", "--finetune-steps", "1", "--sgd-steps", "1",
                        "--sgd-seed", "5"]) == 0
    printed = capsys.readouterr().out
    assert "| tiny+SGD-1, SGD seed 5 |" in printed and "| SGD-1, SGD seed 5 |" in printed
    assert main(args + ["--finetune-steps", "1"]) == 2
    assert "give --ghn or --oneshot" in capsys.readouterr().err


def test_a_cache_refuses_scores_of_another_model_under_the_same_name(tmp_path):
    """Issue 29: `ghn correlate --ghn NAME=other.pt` into a folder scored with NAME=first.pt reused the
    first GHN's scores. A predictor's source (its model's digest) is recorded and checked."""
    archs, _ = fake_records(2)
    path = tmp_path / "predictions.json"
    PredictionCache(path).run(Predictor("ghn", lambda g: 0.5, source="aaaa"), archs, progress=False)
    again = PredictionCache(path).run(Predictor("ghn", lambda g: pytest.fail("rescored"), source="aaaa"), archs,
                                      progress=False)
    assert {s["score"] for s in again["scores"].values()} == {0.5}
    with pytest.raises(ValueError, match="holds scores of another 'ghn'"):
        PredictionCache(path).run(Predictor("ghn", lambda g: 0.25, source="bbbb"), archs, progress=False)
    data = json.loads(path.read_text())
    del data["ghn"]["source"]  # written before caches recorded their source
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="written before caches recorded theirs"):
        PredictionCache(path).run(Predictor("ghn", lambda g: 0.25, source="aaaa"), archs, progress=False)


def test_model_source_follows_the_parameters_and_settings():
    from ghn_ext.studies.correlate import model_source
    model = torch.nn.Linear(2, 2)
    first = model_source(model, 100)
    assert model_source(model, 100) == first and model_source(model, 200) != first
    with torch.no_grad():
        model.weight.add_(1.0)
    assert model_source(model, 100) != first
