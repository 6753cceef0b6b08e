"""Tests for ghn_ext.workflows.search: ranking, resumable scoring, rebuilding ranked architectures, Top-best.

A GHN with 4x4 blocks and one propagation pass (untrained: the ranking machinery does not care how
good the scores are) scores one-block, 4-channel networks on 100 real CIFAR-10 validation images.
"""
import json
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from ghn_ext.workflows import search as S  # noqa: E402
from ghn_ext.models.ghn import GHNConfig, GraphHyperNetwork  # noqa: E402
from ghn_ext.nets.network import count_flops, count_params  # noqa: E402
from ghn_ext.workflows.search import SearchConfig, arch_from_record, for_ghn, run_search, search_architectures, top_best  # noqa: E402
from ghn_ext.spaces import nb201  # noqa: E402

FIELDS = {"index", "hash", "arch", "score", "finetune_steps", "params", "flops", "signal", "images", "scorer"}


def tiny_ghn(space: str) -> GraphHyperNetwork:
    torch.manual_seed(0)
    return GraphHyperNetwork(GHNConfig(space=space, tile_channels=4, T=1))


def search_config(data_dir, space="classification", **kw) -> SearchConfig:
    macro = dict(num_nodes=3, num_blocks=1, channels=4) if space == "classification" else \
        dict(channels=4, cells_per_stage=1)
    # one architecture per GHN call: a score never depends on which others share its batch
    base = dict(num_archs=5, val_images=100, archs_per_batch=1, image_batch=100, seed=0, data_dir=data_dir)
    return SearchConfig(**{**base, **macro, **kw})


@pytest.fixture
def count_scoring(monkeypatch):
    """Record the hashes of the architectures run_search scores (once per round)."""
    scored = []
    real = S.network_score_sum

    def counting(graph, *args, **kw):
        scored.append(graph.stable_hash())
        return real(graph, *args, **kw)

    monkeypatch.setattr(S, "network_score_sum", counting)
    return scored


@pytest.fixture(scope="module")
def classification_search(data_dir, tmp_path_factory):
    """One uninterrupted search of 5 classification architectures."""
    out = tmp_path_factory.mktemp("search")
    cfg = search_config(data_dir)
    ghn = tiny_ghn("classification")
    return ghn, cfg, out, run_search(ghn, cfg, out, progress=False)


def test_ranking_is_sorted_best_first_with_all_fields(classification_search):
    ghn, cfg, out, ranking = classification_search
    saved = json.loads((out / "ranking.json").read_text())
    assert saved["space"] == "classification" and saved["ranking"] == ranking
    assert SearchConfig(**saved["config"]) == for_ghn(cfg, ghn)  # what it left open, the GHN's
    assert sorted(r["index"] for r in ranking) == list(range(cfg.num_archs))
    assert all(set(r) == FIELDS for r in ranking)
    scores = [r["score"] for r in ranking]
    assert scores == sorted(scores, reverse=True)
    assert all(0.0 <= s <= 1.0 for s in scores)
    archs = search_architectures(cfg, "classification")
    for r in ranking:
        g = archs[r["index"]]
        assert r["hash"] == g.stable_hash()
        assert r["arch"] == g.meta["cell"] and len(r["arch"]["ops"]) == cfg.num_nodes
        assert r["params"] == count_params(g) > 0 and r["flops"] == count_flops(g) > 0
    assert len({r["hash"] for r in ranking}) == cfg.num_archs
    lines = (out / "scores.jsonl").read_text().splitlines()
    assert sorted(json.loads(l)["index"] for l in lines) == list(range(cfg.num_archs))
    assert not list(out.glob("*.tmp"))


def test_search_architectures_are_a_function_of_seed_and_index(data_dir):
    cfg = search_config(data_dir)
    hashes = lambda c: [g.stable_hash() for g in search_architectures(c, "classification")]  # noqa: E731
    assert hashes(cfg) == hashes(cfg)
    assert hashes(replace(cfg, num_archs=3)) == hashes(cfg)[:3]  # a longer search extends a shorter one
    assert hashes(replace(cfg, seed=1)) != hashes(cfg)


def test_resume_does_not_rescore_and_ranks_the_same(classification_search, data_dir, tmp_path, count_scoring):
    ghn, cfg, _, uninterrupted = classification_search
    archs = search_architectures(cfg, "classification")
    first = run_search(ghn, replace(cfg, num_archs=3), tmp_path, progress=False)
    assert count_scoring == [g.stable_hash() for g in archs[:3]]
    assert sorted(r["index"] for r in first) == [0, 1, 2]
    count_scoring.clear()
    assert run_search(ghn, cfg, tmp_path, progress=False) == uninterrupted
    assert count_scoring == [archs[3].stable_hash(), archs[4].stable_hash()]  # only the new ones
    count_scoring.clear()
    assert run_search(ghn, cfg, tmp_path, progress=False) == uninterrupted  # all done: nothing scored
    assert count_scoring == []
    assert json.loads((tmp_path / "ranking.json").read_text())["ranking"] == uninterrupted


def test_resume_tolerates_a_line_cut_short(classification_search, tmp_path, count_scoring):
    ghn, cfg, out, uninterrupted = classification_search
    lines = (out / "scores.jsonl").read_text().splitlines(keepends=True)
    # killed while writing the third record: two whole lines and half of one, no newline
    (tmp_path / "scores.jsonl").write_text(lines[0] + lines[1] + lines[2][: len(lines[2]) // 2])
    done = {json.loads(l)["index"] for l in lines[:2]}
    assert run_search(ghn, cfg, tmp_path, progress=False) == uninterrupted
    archs = search_architectures(cfg, "classification")
    assert count_scoring == [archs[i].stable_hash() for i in range(cfg.num_archs) if i not in done]
    # the records written after the damaged line are whole lines that a later resume reads back
    count_scoring.clear()
    assert run_search(ghn, cfg, tmp_path, progress=False) == uninterrupted
    assert count_scoring == []


def test_records_of_another_search_in_the_folder_are_not_reused(classification_search, tmp_path,
                                                                count_scoring):
    ghn, cfg, out, uninterrupted = classification_search
    (tmp_path / "scores.jsonl").write_text((out / "scores.jsonl").read_text())
    other = replace(cfg, seed=1, num_archs=2)
    ranking = run_search(ghn, other, tmp_path, progress=False)
    expected = [g.stable_hash() for g in search_architectures(other, "classification")]
    assert count_scoring == expected
    assert sorted(r["hash"] for r in ranking) == sorted(expected)


def test_scores_of_another_ghn_or_image_count_in_the_folder_are_not_reused(classification_search, tmp_path,
                                                                          count_scoring):
    """Issue 29: a rerun into a folder made with another --ckpt printed the old GHN's ranking, and one
    with --val-images 20 after 200 recorded 20 while the scores came from 200."""
    ghn, cfg, out, uninterrupted = classification_search
    (tmp_path / "scores.jsonl").write_text((out / "scores.jsonl").read_text())
    other = tiny_ghn("classification")
    with torch.no_grad():
        other.hyper_in.weight.mul_(2.0)
    ranking = run_search(other, cfg, tmp_path, progress=False)
    assert len(count_scoring) == cfg.num_archs and ranking != uninterrupted
    assert len({r["scorer"] for r in ranking} | {r["scorer"] for r in uninterrupted}) == 2
    count_scoring.clear()
    fewer = run_search(ghn, replace(cfg, val_images=50), tmp_path, progress=False)
    assert len(count_scoring) == cfg.num_archs and {r["images"] for r in fewer} == {50}


def test_arch_from_record_rebuilds_classification_architectures(classification_search):
    _, cfg, _, ranking = classification_search
    for rec in ranking:
        assert arch_from_record(rec, "classification", cfg).stable_hash() == rec["hash"]
    # a record read back from ranking.json (lists, not tuples) works as well
    rec = json.loads(json.dumps(ranking[0]))
    assert arch_from_record(rec, "classification", cfg).stable_hash() == rec["hash"]


def test_nb201_search_and_arch_from_record(data_dir, tmp_path):
    cfg = search_config(data_dir, space="nb201", num_archs=3, archs_per_batch=2)
    ranking = run_search(tiny_ghn("nb201"), cfg, tmp_path, progress=False)
    assert [r["score"] for r in ranking] == sorted((r["score"] for r in ranking), reverse=True)
    archs = search_architectures(cfg, "nb201")
    for rec in ranking:
        assert set(rec) == FIELDS
        assert rec["arch"] == nb201.arch_string(archs[rec["index"]])
        nb201.parse(rec["arch"])  # a valid NAS-Bench-201 string
        rebuilt = arch_from_record(rec, "nb201", cfg)
        assert rebuilt.stable_hash() == rec["hash"] == archs[rec["index"]].stable_hash()
        # counted on the benchmark's network, not the reduced skeleton the search scores in
        assert rec["params"] == count_params(nb201.network(rec["arch"])) > count_params(rebuilt)


def test_search_with_another_signal_rescores_instead_of_reusing(data_dir, tmp_path):
    cfg = search_config(data_dir, space="nb201", num_archs=3, archs_per_batch=2)
    ghn = tiny_ghn("nb201")
    by_accuracy = run_search(ghn, replace(cfg, signal="accuracy"), tmp_path, progress=False)
    by_loss = run_search(ghn, replace(cfg, signal="loss"), tmp_path, progress=False)
    assert all(r["signal"] == "accuracy" and 0 <= r["score"] <= 1 for r in by_accuracy)
    assert all(r["signal"] == "loss" and r["score"] < 0 for r in by_loss)


def test_top_best_trains_the_top_k_and_picks_the_best(classification_search, tmp_path, monkeypatch):
    _, cfg, _, ranking = classification_search
    best = top_best(ranking, "classification", cfg, tmp_path, top=2, steps=2, progress=False)
    saved = json.loads((tmp_path / "top_best.json").read_text())
    trained = saved["trained"]
    assert [r["hash"] for r in trained] == [r["hash"] for r in ranking[:2]]
    assert all(r["trained_steps"] == 2 and 0.0 <= r["trained_val_acc"] <= 1.0 for r in trained)
    assert best == saved["best"] == max(trained, key=lambda r: r["trained_val_acc"])
    assert FIELDS <= set(best)

    # rerun: finished architectures are not trained again ...
    def no_training(*a, **kw):
        raise AssertionError("retrained a finished architecture")

    monkeypatch.setattr(S, "train_briefly", no_training)
    assert top_best(ranking, "classification", cfg, tmp_path, top=2, steps=2, progress=False) == best
    # ... unless they were trained for another number of steps
    calls = []
    monkeypatch.setattr(S, "train_briefly", lambda graph, *a, **kw: calls.append(graph.stable_hash()) or 0.5)
    again = top_best(ranking, "classification", cfg, tmp_path, top=2, steps=3, progress=False)
    assert calls == [r["hash"] for r in ranking[:2]]
    assert again["trained_steps"] == 3 and again["trained_val_acc"] == 0.5


def test_finetuned_search_trains_generated_weights_and_keeps_plain_scores_apart(
        classification_search, data_dir, tmp_path, monkeypatch, count_scoring):
    """--finetune-steps k scores GHN+SGD-k; a folder's plain scores (also those written before records named
    their finetune_steps) are not taken for it, nor its scores for plain ones."""
    ghn, cfg, out, plain = classification_search
    legacy = [json.loads(line) for line in (out / "scores.jsonl").read_text().splitlines()]
    (tmp_path / "scores.jsonl").write_text("".join(
        json.dumps({k: v for k, v in rec.items() if k != "finetune_steps"}) + "\n" for rec in legacy))
    trained = []
    real = S.train_briefly
    monkeypatch.setattr(S, "train_briefly", lambda g, *a, **kw: trained.append((g.stable_hash(), kw)) or real(g, *a, **kw))
    archs = search_architectures(cfg, "classification")
    ranking = run_search(ghn, replace(cfg, finetune_steps=1), tmp_path, progress=False)
    assert sorted(h for h, _ in trained) == sorted(g.stable_hash() for g in archs) and count_scoring == []
    assert all(kw["batch_stats"] and kw["init"] is not None for _, kw in trained)
    assert {r["finetune_steps"] for r in ranking} == {1}
    splits = S.cifar10_splits(data_dir)
    first = next(g for g in archs if g.stable_hash() == ranking[0]["hash"])
    with torch.no_grad():
        init = ghn(first)
    assert ranking[0]["score"] == real(first, splits.train, splits.val.head(cfg.val_images), 1, cfg.finetune_lr,
                                       seed=cfg.seed, init=init, batch_stats=True)
    trained.clear()
    assert run_search(ghn, replace(cfg, finetune_steps=1), tmp_path, progress=False) == ranking and trained == []
    assert run_search(ghn, cfg, tmp_path, progress=False) == [{k: v for k, v in r.items() if k != "finetune_steps"}
                                                              for r in plain]
    assert trained == [] and count_scoring == []


def test_search_combined_with_synflow_ranks_by_the_mean_rank(data_dir, tmp_path):
    from ghn_ext.nets.proxies import synflow
    from ghn_ext.core.rank_measures import rank_mean
    cfg = search_config(data_dir, space="nb201", num_archs=4, archs_per_batch=2, combine="synflow")
    ranking = run_search(tiny_ghn("nb201"), cfg, tmp_path, progress=False)
    assert [r["combined"] for r in ranking] == sorted((r["combined"] for r in ranking), reverse=True)
    for rec in ranking:  # synflow of the benchmark's network of the cell
        assert rec["synflow"] == synflow(nb201.network(rec["arch"]))
    by_index = sorted(ranking, key=lambda r: r["index"])
    expected = rank_mean([r["score"] for r in by_index], [r["synflow"] for r in by_index])
    assert [r["combined"] for r in by_index] == pytest.approx(expected.tolist())
    # a plain search's records lack synflow: a combined rerun into the folder scores them again
    plain = tmp_path / "plain"
    run_search(tiny_ghn("nb201"), replace(cfg, combine=""), plain, progress=False)
    again = run_search(tiny_ghn("nb201"), cfg, plain, progress=False)
    assert all("synflow" in r for r in again)


def test_halving_rounds_keep_a_third_on_three_times_the_images():
    cfg = SearchConfig(num_archs=1000, val_images=5000, min_images=500, eta=3, min_final=30)
    assert S.halving_rounds(cfg) == [(500, 1000), (1500, 334), (4500, 112), (5000, 38)]
    # image counts are whole BatchNorm batches; at least min_final candidates reach all images
    assert S.halving_rounds(replace(cfg, num_archs=40, min_images=250)) == [(300, 40), (900, 30), (2700, 30), (5000, 30)]
    # off, or nothing to gain, or GHN+SGD-k (scored once, after training): one round on all images
    for off in (replace(cfg, min_images=0), replace(cfg, min_images=5000), replace(cfg, finetune_steps=2)):
        assert S.halving_rounds(off) == [(5000, off.num_archs)]
    with pytest.raises(ValueError, match="eta must be >= 2"):
        S.halving_rounds(replace(cfg, eta=1))


def test_adaptive_search_scores_its_finalists_exactly_as_full_evaluation(data_dir, tmp_path, count_scoring):
    """9 cells on 100 images, the best 3 on 300: the 3 lead the ranking with their full-evaluation scores,
    the other 6 follow in their first-round order; a rerun scores nothing again."""
    ghn = tiny_ghn("nb201")
    full_cfg = search_config(data_dir, space="nb201", num_archs=9, val_images=300, archs_per_batch=2,
                             min_images=0, signal="loss")
    full = {r["hash"]: r["score"] for r in run_search(ghn, full_cfg, tmp_path / "full", progress=False)}
    count_scoring.clear()
    cfg = replace(full_cfg, min_images=100, eta=3, min_final=2)
    ranking = run_search(ghn, cfg, tmp_path / "adaptive", progress=False)
    assert len(count_scoring) == 9 + 3
    assert [r["images"] for r in ranking] == [300] * 3 + [100] * 6
    for r in ranking[:3]:
        assert r["score"] == pytest.approx(full[r["hash"]], rel=1e-12, abs=1e-12)
    assert [r["score"] for r in ranking[3:]] == sorted((r["score"] for r in ranking[3:]), reverse=True)
    saved = json.loads((tmp_path / "adaptive" / "ranking.json").read_text())
    assert saved["rounds"] == [[100, 9], [300, 3]] and saved["ranking"] == ranking
    assert {"total", "data", "sample", "ghn", "evaluate", "other"} <= set(saved["timing"])
    assert saved["timing"]["evaluate"] <= saved["timing"]["total"]
    count_scoring.clear()
    assert run_search(ghn, cfg, tmp_path / "adaptive", progress=False) == ranking and count_scoring == []



@pytest.mark.parametrize("field,value", [("num_archs", -1), ("num_archs", 0), ("val_images", -5), ("val_images", 0),
                                         ("channels", 0), ("cells_per_stage", -1), ("min_images", -1),
                                         ("archs_per_batch", 0), ("num_archs", 2.5)])
def test_search_config_refuses_values_that_would_mean_something_else(field, value):
    """Issue 29: --val-images -5 scored on 4,995 images, 0 scored 0.0, --num-archs -1 wrote an empty ranking."""
    with pytest.raises(ValueError, match=f"search {field} must be an integer"):
        SearchConfig(**{field: value})


def test_finalists_are_scored_deeper_and_ranked_by_the_rank_mean(data_dir, tmp_path, count_scoring, monkeypatch):
    """Issue 43's last stage: the best K of the adaptive ranking scored again by the GHN in a deeper
    skeleton, then ordered among themselves by the rank mean of the GHN's score, that score and the
    parameter count; the rest keep their order. A rerun reuses the finalists' scores."""
    from ghn_ext.core.rank_measures import rank_mean
    ghn = tiny_ghn("nb201")
    base = search_config(data_dir, space="nb201", num_archs=6)
    plain = run_search(ghn, base, tmp_path / "plain", progress=False)
    cfg = replace(base, finalists=3, finalist_skeleton={"cells_per_stage": 2}, finalist_images=100)
    ranking = run_search(ghn, cfg, tmp_path / "final", progress=False)
    finalists = ranking[:3]
    assert {r["index"] for r in finalists} == {r["index"] for r in plain[:3]} and ranking[3:] == plain[3:]
    deeper = ghn.score([r["arch"] for r in finalists], images=100, skeleton={"channels": 4, "cells_per_stage": 2},
                       archs_per_batch=1)
    assert [r["finalist_score"] for r in finalists] == pytest.approx(deeper, rel=1e-6)
    expected = rank_mean([r["score"] for r in finalists], deeper, [r["params"] for r in finalists])
    assert [r["final"] for r in finalists] == pytest.approx(list(expected))
    assert [r["final"] for r in finalists] == sorted((r["final"] for r in finalists), reverse=True)
    saved = json.loads((tmp_path / "final" / "ranking.json").read_text())
    assert saved["pick"] == "finalists" and saved["stages"][1]["skeleton"] == {"channels": 4, "cells_per_stage": 2}
    count_scoring.clear()
    import ghn_ext.models.scoring as scoring
    finalist_calls = []
    monkeypatch.setattr(scoring, "score_architectures", lambda *a, **kw: finalist_calls.append(a) or [])
    assert run_search(ghn, cfg, tmp_path / "final", progress=False) == ranking
    assert count_scoring == [] and finalist_calls == []  # nothing scored again, finalists included


def test_finalist_settings_are_checked():
    for bad, match in (({"finalists": -1}, "finalists"), ({"finalist_rank": ("speed",)}, "finalist_rank"),
                       ({"finalist_rank": ("synflow",)}, "combine='synflow'"),
                       ({"finalist_skeleton": {"cells_per_stage": 0}}, "finalist_cells_per_stage")):
        with pytest.raises(ValueError, match=match):
            SearchConfig(**bad)
