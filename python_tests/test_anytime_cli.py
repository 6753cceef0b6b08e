"""End-to-end test of `ghn anytime train|search|train-final` at a toy size, and its clear errors. The
search and final training are ghn_ext.workflows.anytime's, tested through the Python API in
test_anytime_search.py; here: that the commands run them with the options given and print."""
from __future__ import annotations

import json

import pytest
import torch

from ghn_ext import cli
from ghn_ext.cli import anytime as anytime_cli
from ghn_ext.core.graph import ArchGraph
from ghn_ext.models.ghn import GraphHyperNetwork
from ghn_ext.workflows.anytime import AnytimeFinalConfig, AnytimeSearchConfig, AnytimeTrainConfig, run_anytime_search

torch.set_num_threads(1)


def test_train_search_train_final(tmp_path, data_dir, capsys):
    run, search, final = tmp_path / "run", tmp_path / "search", tmp_path / "final"
    common = ["--channels", "4", "--data-dir", data_dir, "--quiet"]
    assert cli.main(["anytime", "train", "--out", str(run), "--steps", "2", "--batch-size", "8", "--T", "1",
                     "--tile-channels", "8", "--eval-archs", "1", "--eval-images", "20", *common]) == 0
    capsys.readouterr()
    assert cli.main(["anytime", "search", "--ckpt", str(run / "ghn.pt"), "--out", str(search), "--num-archs", "3",
                     "--val-images", "20", "--baseline-layers", "2", "--show-top", "2", *common]) == 0
    ranking = json.loads((search / "ranking.json").read_text())
    areas = [r["area"] for r in ranking["ranking"]]
    assert len(areas) == 3 and areas == sorted(areas, reverse=True)
    assert ranking["flops_range"][0] == 0 and ranking["flops_range"][1] > 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"area over [0, {ranking['flops_range'][1]:.3g}] FLOPs; top 2:" and len(lines) == 4
    top = ranking["ranking"][0]
    assert lines[1] == (f"   1  area {top['area']:.4f}  last exit {top['exit_acc'][-1]:.4f} at "
                        f"{top['exit_flops'][-1] / 1e6:.1f} MFLOPs  {top['hash']}")
    assert lines[-1] == f"ranking written to {search / 'ranking.json'}"
    # the command is the Python API's search with those settings
    same = run_anytime_search(GraphHyperNetwork.load(run / "ghn.pt"), tmp_path / "api",
                              AnytimeSearchConfig(num_archs=3, val_images=20, baseline_layers=2, channels=4,
                                                  data_dir=data_dir), progress=False)
    assert same == ranking["ranking"]
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
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(": area ")[0] for line in lines] == ["searched", "msdnet", lines[2]] and len(lines) == 3
    assert lines[0].startswith(f"searched: area {result['searched']['area']:.4f}, exits ")
    assert lines[2] == f"results in {final / 'result.json'}, plot {final / 'curves.png'}"
    assert (final / "searched.pt").is_file() and (final / "msdnet.pt").is_file()
    # a rerun finds both networks trained and only evaluates them again
    assert cli.main(["anytime", "train-final", "--ranking", str(search / "ranking.json"), "--out", str(final),
                     "--epochs", "1", "--train-images", "64", "--test-images", "50", "--baseline-layers", "2",
                     "--flops-range", "0,2e6", *common]) == 0
    assert json.loads((final / "result.json").read_text())["searched"] == result["searched"]


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


def test_options_default_to_the_workflow_configs():
    """The commands' defaults are the configs' (ghn_ext.workflows.anytime), not numbers of their own."""
    parser = cli.build_parser(only="anytime")
    search = parser.parse_args(["anytime", "search", "--ckpt", "g.pt", "--out", "o"])
    final = parser.parse_args(["anytime", "train-final", "--ranking", "r.json", "--out", "o"])
    assert anytime_cli._search_config(search) == AnytimeSearchConfig()
    assert anytime_cli._final_config(final) == AnytimeFinalConfig()
    given = parser.parse_args(["anytime", "train-final", "--ranking", "r.json", "--out", "o", "--rank", "2",
                               "--epochs", "3", "--batch-size", "8", "--lr", "0.05", "--train-images", "64",
                               "--test-images", "50", "--seed", "4", "--channels", "8", "--baseline-layers", "3",
                               "--baseline-exit-every", "1", "--flops-range", "0,2e6", "--data-dir", "d"])
    assert anytime_cli._final_config(given) == AnytimeFinalConfig(
        rank=2, test_images=50, channels=8, baseline_layers=3, baseline_exit_every=1, flops_range=(0, 2e6),
        data_dir="d", training=AnytimeTrainConfig(epochs=3, batch_size=8, lr=0.05, train_images=64, seed=4))
