"""`ghn correlate --space nb201`: predictors against a CSV table of NAS-Bench-201 accuracies."""
from __future__ import annotations

import json

import pytest

from ghn_ext import cli
from ghn_ext.workflows.train import training_seconds
from ghn_ext.spaces import nb201
from test_cli import one_error_line, run_quietly, small_validation, train_argv

CELLS = ["|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|",
         "|none~0|+|skip_connect~0|none~1|+|nor_conv_1x1~0|none~1|avg_pool_3x3~2|",
         "|nor_conv_1x1~0|+|skip_connect~0|nor_conv_1x1~1|+|none~0|skip_connect~1|nor_conv_3x3~2|",
         "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|",
         "|avg_pool_3x3~0|+|avg_pool_3x3~0|avg_pool_3x3~1|+|avg_pool_3x3~0|avg_pool_3x3~1|avg_pool_3x3~2|"]
ACC = [93.1, 60.2, 92.5, 10.0, 55.0]


@pytest.fixture(scope="module")
def snapshot_run(data_dir, tmp_path_factory):
    """`ghn train --space nb201` for 2 steps, keeping a snapshot after each."""
    out = tmp_path_factory.mktemp("nb201_snapshots")
    with small_validation():
        run_quietly(train_argv(out, data_dir, "nb201", 2, "--snapshot-every", "1"))
    return out


@pytest.fixture()
def table(tmp_path):
    path = tmp_path / "truth.csv"
    path.write_text("arch,cifar10_test_200ep,cifar100_test_200ep,cifar10_val_12ep\n" + "".join(
        f"{c},{a},{a / 2},{a - 5}\n" for c, a in zip(CELLS, ACC)))
    return path


def test_snapshots_are_kept_and_timed_up_to_their_step(snapshot_run):
    first, second = snapshot_run / "ghn_step0000001.pt", snapshot_run / "ghn_step0000002.pt"
    assert first.is_file() and second.is_file()
    log = [json.loads(l) for l in (snapshot_run / "train_log.jsonl").read_text().splitlines()]
    assert training_seconds(first) == pytest.approx(log[0]["seconds"])
    assert training_seconds(snapshot_run / "ghn.pt") == pytest.approx(sum(r["seconds"] for r in log))


def test_correlate_table_with_a_ghn_and_every_baseline(snapshot_run, table, data_dir, tmp_path, capsys):
    out = tmp_path / "corr"
    argv = ["correlate", "--space", "nb201", "--groundtruth", str(table), "--ghn", f"G={snapshot_run / 'ghn.pt'}",
            "--column", "cifar10_test_200ep,cifar100_test_200ep", "--val-images", "20", "--proxy-images", "8",
            "--resamples", "20", "--out", str(out), "--data-dir", data_dir, "--quiet"]
    assert cli.main(argv) == 0
    text = capsys.readouterr().out
    for row in ("| G (loss, 20 images, 1 cells/stage, 4 ch) |", "| parameter count |", "| FLOPs |", "| synflow (seed 0) |",
                "| NASWOT (8 images, seed 0) |", "| 12-epoch SGD (the benchmark's, from the table) |",
                "| G (loss, 20 images, 1 cells/stage, 4 ch) + synflow (rank mean) |"):
        assert row in text
    rows = json.loads((out / "table_cifar10_test_200ep.json").read_text())
    assert {r["predictor"] for r in rows} >= {"parameter count", "FLOPs"}
    sgd = next(r for r in rows if r["predictor"].startswith("12-epoch"))
    assert sgd["spearman"] == pytest.approx(1.0)   # the made-up 12-epoch column is the truth minus 5
    for name in ("scatter_cifar10_test_200ep.png", "scatter_cifar100_test_200ep.png", "predictions.json"):
        assert (out / name).is_file()
    # every score is cached under the cell's full-skeleton network: a rerun computes nothing new
    cached = json.loads((out / "predictions.json").read_text())
    hashes = {nb201.network(c).stable_hash() for c in CELLS}
    assert all(set(e["scores"]) == hashes for e in cached.values())
    assert cli.main(argv) == 0
    assert json.loads((out / "predictions.json").read_text()) == cached


def test_rank_mean_gives_each_predictor_an_equal_say():
    from ghn_ext.core.rank_measures import rank_mean
    a, b = [1.0, 2.0, 3.0], [300.0, 100.0, 200.0]       # ranks 0, .5, 1 and 1, 0, .5
    assert rank_mean(a, b).tolist() == pytest.approx([0.5, 0.25, 0.75])
    assert rank_mean(a, [x * 1e9 for x in b]).tolist() == rank_mean(a, b).tolist()


@pytest.mark.parametrize("extra,match", [
    (["--column", "cifar10_test_12ep"], "has no column 'cifar10_test_12ep'"),
    (["--sgd-steps", "2"], "--sgd-steps apply to a ground truth of `ghn groundtruth`"),
    (["--baselines", "zen"], "unknown baseline 'zen'"),
])
def test_correlate_table_refuses_bad_settings(table, data_dir, tmp_path, capsys, extra, match):
    argv = ["correlate", "--space", "nb201", "--groundtruth", str(table), "--out", str(tmp_path / "c"),
            "--data-dir", data_dir, "--quiet", *extra]
    assert cli.main(argv) == 2
    assert match in one_error_line(capsys, "correlate")


def test_correlate_table_refuses_a_classification_ghn(table, data_dir, tmp_path, capsys):
    path = tmp_path / "cls.pt"
    from ghn_ext.models.ghn import GHNConfig, GraphHyperNetwork
    GraphHyperNetwork(GHNConfig(tile_channels=4, T=1)).save(path)
    assert cli.main(["correlate", "--space", "nb201", "--groundtruth", str(table), "--ghn", str(path),
                     "--out", str(tmp_path / "c"), "--data-dir", data_dir, "--quiet"]) == 2
    assert "is a GHN for the 'classification' space, not 'nb201'" in one_error_line(capsys, "correlate")
