"""Tests of ghn_ext.studies.ablation: the variants of each study, their training configs, and `ghn ablate` end to
end on a tiny ground truth (report, plots, resume)."""
from __future__ import annotations

import json
from dataclasses import replace

import pytest

from ghn_ext.models.ghn import GHNConfig
from ghn_ext.studies.ablation import Variant, study_variants, variant_config
from ghn_ext.cli import main
from ghn_ext.studies.groundtruth import Protocol, run_groundtruth
from ghn_ext.workflows.train import TrainConfig

TINY = Protocol(num_nodes=3, num_blocks=1, channels=4, train_images=64, epochs=1, batch_size=32, val_images=100)


def test_study_variants():
    assert [v.num_nodes for v in study_variants("nodes", [3, 7], [1])] == [3, 7]
    prop = study_variants("propagation", [7], [1, 5])
    assert [(v.scheme, v.T) for v in prop] == [("sync", 1), ("sync", 5), ("fb", 1), ("fb", 5)]
    stack = study_variants("stacking", [7], [5])
    assert [(v.share_params, v.pass_embedding) for v in stack] == [(False, False), (False, True), (True, True)]
    # the paper's GHN (N=7, fb, T=5, sharing and passing) is one variant shared by all three studies
    assert Variant() in study_variants("nodes", [7], [5]) and Variant() in prop and stack[-1] == Variant()
    with pytest.raises(ValueError, match="unknown study 'depth'"):
        study_variants("depth", [7], [5])


def test_variant_config_changes_only_the_ablated_choices():
    base = TrainConfig(steps=10, lr=3e-4, ghn=GHNConfig(tile_channels=8))
    cfg = variant_config(base, Variant(num_nodes=3, scheme="sync", T=2, share_params=False))
    assert cfg.num_nodes == 3 and cfg.steps == 10 and cfg.lr == 3e-4
    assert cfg.ghn == GHNConfig(tile_channels=8, scheme="sync", T=2, share_params=False, pass_embedding=True)
    assert Variant(num_nodes=3, scheme="sync", T=2, share_params=False).name == "N3-sync-T2-SP0-PE1"


@pytest.mark.slow
def test_cli_ablate_writes_report_and_resumes(data_dir, tmp_path, capsys):
    gt = tmp_path / "gt.json"
    run_groundtruth(TINY, gt, 3, data_dir, progress=False)
    out = tmp_path / "ablation"
    args = ["ablate", "--groundtruth", str(gt), "--out", str(out), "--steps", "2", "--nodes", "3", "--T", "1",
            "--tile-channels", "4", "--data-dir", data_dir, "--quiet"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    for section in ("## nodes", "## propagation", "## stacking", "| N=3 |", "| sync, T=1 |", "| SP no, PE no |"):
        assert section in printed
    assert (out / "ablation.md").read_text() in printed
    assert (out / "nodes.png").stat().st_size > 0 and (out / "propagation.png").stat().st_size > 0
    # six variants: N3; sync T1, fb T1; SP0 PE0, SP0 PE1; the paper's GHN (shared by the studies)
    runs = sorted(p.name for p in out.iterdir() if p.is_dir())
    assert runs == sorted(["N3-fb-T5-SP1-PE1", "N7-sync-T1-SP1-PE1", "N7-fb-T1-SP1-PE1", "N7-fb-T5-SP0-PE0",
                           "N7-fb-T5-SP0-PE1", "N7-fb-T5-SP1-PE1"])
    cache = json.loads((out / "predictions.json").read_text())
    assert set(cache) == set(runs) and all(len(e["scores"]) == 3 for e in cache.values())
    # a rerun trains and scores nothing again: same weights, same cached scores
    stamp = {r: (out / r / "ghn.pt").stat().st_mtime_ns for r in runs}
    assert main(args) == 0
    assert stamp == {r: (out / r / "ghn.pt").stat().st_mtime_ns for r in runs}
    assert json.loads((out / "predictions.json").read_text()) == cache


def test_cli_ablate_rejects_nb201_ground_truth(data_dir, tmp_path, capsys):
    gt = tmp_path / "gt.json"
    run_groundtruth(replace(TINY, space="nb201", cells_per_stage=1), gt, 3, data_dir, progress=False)
    assert main(["ablate", "--groundtruth", str(gt), "--out", str(tmp_path / "a"), "--steps", "1",
                 "--data-dir", data_dir, "--quiet"]) == 2
    assert "classification space" in capsys.readouterr().err
