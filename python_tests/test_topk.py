"""Tests of ghn_ext.studies.topk (`ghn compare-top`): the search's top k trained under the ground-truth protocol
against k random ground-truth architectures, with resume and clear errors."""
from __future__ import annotations

import json

from ghn_ext.cli import main
from ghn_ext.models.ghn import GHNConfig, GraphHyperNetwork
from ghn_ext.studies.groundtruth import Protocol, run_groundtruth

TINY = Protocol(num_nodes=3, num_blocks=1, channels=4, train_images=64, epochs=1, batch_size=32, val_images=100)


def _search(tmp_path, data_dir, channels):
    GraphHyperNetwork(GHNConfig(tile_channels=4, T=1)).save(tmp_path / "ghn.pt")
    out = tmp_path / f"search{channels}"
    assert main(["search", "--ckpt", str(tmp_path / "ghn.pt"), "--out", str(out), "--num-archs", "3",
                 "--num-nodes", "3", "--num-blocks", "1", "--channels", str(channels), "--val-images", "100",
                 "--data-dir", data_dir, "--quiet"]) == 0
    return out / "ranking.json"


def test_compare_top_trains_the_top_and_resumes(data_dir, tmp_path, capsys):
    gt = tmp_path / "gt.json"
    run_groundtruth(TINY, gt, 3, data_dir, progress=False)
    ranking = _search(tmp_path, data_dir, channels=4)
    capsys.readouterr()
    out = tmp_path / "cmp"
    args = ["compare-top", "--groundtruth", str(gt), "--ranking", str(ranking), "--k", "2", "--out", str(out),
            "--data-dir", data_dir, "--quiet"]
    assert main(args) == 0
    assert "| GHN top-2 |" in capsys.readouterr().out
    result = json.loads((out / "compare.json").read_text())
    top = json.loads(ranking.read_text())["ranking"][:2]
    trained = json.loads((out / "trained.json").read_text())
    assert list(trained) == [r["hash"] for r in top]
    assert result["groups"]["GHN top-2"]["accs"] == [trained[r["hash"]]["val_acc"] for r in top]
    gt_records = sorted(json.loads(gt.read_text())["results"].values(), key=lambda r: r["index"])
    assert result["groups"]["random 2"]["accs"] == [r["val_acc"] for r in gt_records[:2]]
    assert (out / "compare.png").stat().st_size > 0
    # rerun: nothing is trained again
    stamp = (out / "trained.json").stat().st_mtime_ns
    assert main(args) == 0
    assert (out / "trained.json").stat().st_mtime_ns == stamp


def test_compare_top_errors(data_dir, tmp_path, capsys):
    gt = tmp_path / "gt.json"
    run_groundtruth(TINY, gt, 2, data_dir, progress=False)
    wrong_shape = _search(tmp_path, data_dir, channels=6)
    capsys.readouterr()
    base = ["compare-top", "--groundtruth", str(gt), "--out", str(tmp_path / "c"), "--data-dir", data_dir, "--quiet"]
    assert main(base + ["--ranking", str(wrong_shape), "--k", "2"]) == 2
    assert "--channels 4" in capsys.readouterr().err
    assert main(base + ["--ranking", str(tmp_path / "none.json"), "--k", "2"]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(base + ["--ranking", str(wrong_shape), "--k", "5"]) == 2
    assert "need k=5" in capsys.readouterr().err
    (tmp_path / "bad.json").write_text("{not json")
    assert main(base + ["--ranking", str(tmp_path / "bad.json"), "--k", "2"]) == 2
    assert "not a ranking.json" in capsys.readouterr().err
