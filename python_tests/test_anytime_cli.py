"""End-to-end test of `ghn anytime train|search|train-final` at a toy size, and its clear errors."""
from __future__ import annotations

import json

import pytest
import torch

from ghn_ext import cli
from ghn_ext.core.graph import ArchGraph

torch.set_num_threads(1)


def test_train_search_train_final(tmp_path, data_dir, capsys):
    run, search, final = tmp_path / "run", tmp_path / "search", tmp_path / "final"
    common = ["--channels", "4", "--data-dir", data_dir, "--quiet"]
    assert cli.main(["anytime", "train", "--out", str(run), "--steps", "2", "--batch-size", "8", "--T", "1",
                     "--block-channels", "8", "--eval-archs", "1", "--eval-images", "20", *common]) == 0
    assert cli.main(["anytime", "search", "--ckpt", str(run / "ghn.pt"), "--out", str(search), "--num-archs", "3",
                     "--val-images", "20", "--baseline-layers", "2", *common]) == 0
    ranking = json.loads((search / "ranking.json").read_text())
    areas = [r["area"] for r in ranking["ranking"]]
    assert len(areas) == 3 and areas == sorted(areas, reverse=True)
    assert ranking["flops_range"][0] == 0 and ranking["flops_range"][1] > 0
    assert cli.main(["anytime", "train-final", "--ranking", str(search / "ranking.json"), "--out", str(final),
                     "--epochs", "1", "--train-images", "64", "--test-images", "50", "--baseline-layers", "2",
                     "--flops-range", "0,2e6", *common]) == 0
    result = json.loads((final / "result.json").read_text())
    assert result["flops_range"] == [0, 2e6] and result["config"]["epochs"] == 1
    for name in ("searched", "msdnet"):
        assert len(result[name]["exit_acc"]) == len(result[name]["exit_flops"]) and 0 <= result[name]["area"] <= 1
    # the searched network's width was chosen to stay within the baseline's FLOPs
    assert result["searched"]["exit_flops"][-1] <= result["msdnet"]["exit_flops"][-1]
    assert ArchGraph.from_dict(result["searched_graph"]).space == "anytime"
    assert (final / "curves.png").stat().st_size > 0
    assert "searched: area" in capsys.readouterr().out
    assert (final / "searched.pt").is_file() and (final / "msdnet.pt").is_file()
    # a rerun finds both networks trained and only evaluates them again
    assert cli.main(["anytime", "train-final", "--ranking", str(search / "ranking.json"), "--out", str(final),
                     "--epochs", "1", "--train-images", "64", "--test-images", "50", "--baseline-layers", "2",
                     "--flops-range", "0,2e6", *common]) == 0
    assert json.loads((final / "result.json").read_text())["searched"] == result["searched"]


def test_search_resumes_and_reranks_by_another_range(tmp_path, data_dir, monkeypatch):
    import ghn_ext.workflows.anytime as anytime_search
    from ghn_ext.models.ghn import GHNConfig, GraphHyperNetwork

    torch.manual_seed(0)
    GraphHyperNetwork(GHNConfig(space="anytime", block_channels=8, T=1)).save(tmp_path / "ghn.pt")
    scored = []
    real = anytime_search.score_anytime
    monkeypatch.setattr(anytime_search, "score_anytime",
                        lambda ghn, archs, *a, **kw: scored.extend(g.stable_hash() for g in archs) or real(ghn, archs, *a, **kw))
    out = tmp_path / "search"

    def search(num_archs, *extra):
        assert cli.main(["anytime", "search", "--ckpt", str(tmp_path / "ghn.pt"), "--out", str(out), "--num-archs",
                         str(num_archs), "--val-images", "20", "--baseline-layers", "2", "--archs-per-batch", "2",
                         "--channels", "4", "--data-dir", data_dir, "--quiet", *extra]) == 0
        return json.loads((out / "ranking.json").read_text())

    first = search(3)
    assert len(scored) == 3 and (out / "scores.jsonl").is_file()
    grown = search(5)  # the first 3 are read back, only 2 more scored
    assert len(scored) == 5 and len(set(scored)) == 5 and len(grown["ranking"]) == 5
    assert {r["hash"] for r in first["ranking"]} <= {r["hash"] for r in grown["ranking"]}
    hi = grown["flops_range"][1] / 4
    narrow = search(5, "--flops-range", f"0,{hi}")  # nothing scored again; areas over the new range
    assert len(scored) == 5 and narrow["flops_range"] == [0, hi]
    from ghn_ext.workflows.evaluate import curve_area
    for r in narrow["ranking"]:
        assert r["area"] == pytest.approx(curve_area(r["exit_flops"], r["exit_acc"], 0, hi))
    assert [r["area"] for r in narrow["ranking"]] == sorted((r["area"] for r in narrow["ranking"]), reverse=True)


@pytest.mark.parametrize("argv,match", [
    (["anytime", "train-final", "--ranking", "missing.json", "--out", "x"], "ranking file missing.json does not exist"),
    (["anytime", "search", "--ckpt", "missing.pt", "--out", "x"], "checkpoint missing.pt does not exist"),
    (["search", "--space", "anytime", "--ckpt", "x.pt", "--out", "x"], "use `ghn anytime search`"),
    (["train", "--space", "anytime", "--out", "x"], "use `ghn anytime train`"),
    (["train-final", "--space", "anytime", "--arch", "a.txt", "--out", "x"], "use `ghn anytime train-final`"),
    (["groundtruth", "--space", "anytime", "--out", "x.json"], "does not handle anytime networks"),
])
def test_errors_are_one_line(argv, match, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"ghn {argv[0]}: error: ") and match in err and err.count("\n") == 1


def test_anytime_training_takes_every_training_option_and_no_shape_the_space_fixes(capsys):
    """Issue 30: one entry point for anytime training, with `ghn train`'s training options."""
    with pytest.raises(SystemExit):
        cli.main(["anytime", "train", "--help"])
    out = capsys.readouterr().out
    assert all(flag in out for flag in ("--archs-per-step", "--ema", "--checkpoint-every", "--snapshot-every",
                                        "--scheme", "--channels", "--restart"))
    assert not any(flag in out for flag in ("--space", "--num-nodes", "--num-blocks", "--cells-per-stage"))


def test_show_draws_an_anytime_network(capsys):
    assert cli.main(["show", "--space", "anytime", "--channels", "4", "--seed", "1"]) == 0
    out = capsys.readouterr().out
    assert "space: anytime" in out and "conv" in out


def test_bad_flops_range_is_a_usage_error(capsys):
    with pytest.raises(SystemExit):
        cli.main(["anytime", "search", "--ckpt", "a", "--out", "b", "--flops-range", "5"])
    assert "expected LO,HI" in capsys.readouterr().err


def test_search_rescores_curves_of_another_ghn_or_image_count(tmp_path, data_dir, monkeypatch):
    """Issue 29: anytime search records did not say which GHN drew them on how many images, so a rerun
    with another --ckpt or --val-images ranked the old curves."""
    import ghn_ext.workflows.anytime as anytime_search
    from ghn_ext.models.ghn import GHNConfig, GraphHyperNetwork

    for seed in (0, 1):
        torch.manual_seed(seed)
        GraphHyperNetwork(GHNConfig(space="anytime", block_channels=8, T=1)).save(tmp_path / f"ghn{seed}.pt")
    scored = []
    real = anytime_search.score_anytime
    monkeypatch.setattr(anytime_search, "score_anytime",
                        lambda ghn, archs, *a, **kw: scored.extend(archs) or real(ghn, archs, *a, **kw))

    def search(ckpt, images):
        assert cli.main(["anytime", "search", "--ckpt", str(tmp_path / ckpt), "--out", str(tmp_path / "search"),
                         "--num-archs", "2", "--val-images", str(images), "--baseline-layers", "2",
                         "--channels", "4", "--data-dir", data_dir, "--quiet"]) == 0
        return len(scored)

    assert search("ghn0.pt", 20) == 2
    assert search("ghn0.pt", 20) == 2  # read back
    assert search("ghn0.pt", 40) == 4  # other images: scored again
    assert search("ghn1.pt", 40) == 6  # another GHN: scored again
    ranking = json.loads((tmp_path / "search" / "ranking.json").read_text())["ranking"]
    assert all(r["images"] == 40 for r in ranking) and len({r["scorer"] for r in ranking}) == 1
