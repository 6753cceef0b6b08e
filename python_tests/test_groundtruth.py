"""Tests for ghn_ext.studies.groundtruth: the SGD-trained ground truth of the correlation benchmark.

A tiny protocol (one-cell, 4-channel networks of 3 nodes, 64 training and 100 validation images of
real CIFAR-10) keeps every run to a second or two.
"""
import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from ghn_ext.studies import groundtruth as G
from ghn_ext.cli import main
from ghn_ext.studies.groundtruth import Protocol, groundtruth_architectures, load_groundtruth, run_groundtruth

TINY = Protocol(num_nodes=3, num_blocks=1, channels=4, train_images=64, epochs=1, batch_size=32,
                val_images=100)


def test_records_resume_and_growth(data_dir, tmp_path, monkeypatch):
    path = tmp_path / "gt.json"
    first = run_groundtruth(TINY, path, 2, data_dir, progress=False)
    assert [r["index"] for r in first] == [0, 1]
    archs = groundtruth_architectures(TINY, 3)
    assert [r["hash"] for r in first] == [g.stable_hash() for g in archs[:2]]
    for r in first:
        assert 0.0 <= r["val_acc"] <= 1.0 and r["train_seconds"] > 0 and r["params"] > 0 and r["flops"] > 0

    trained = []
    real = G.train_briefly
    monkeypatch.setattr(G, "train_briefly", lambda g, *a, **k: trained.append(g.stable_hash()) or real(g, *a, **k))
    grown = run_groundtruth(TINY, path, 3, data_dir, progress=False)
    assert trained == [archs[2].stable_hash()]  # the finished two are kept, not retrained
    assert grown[:2] == first and grown[2]["index"] == 2
    protocol, records = load_groundtruth(path)
    assert protocol == TINY and records == grown


def test_training_is_deterministic(data_dir, tmp_path):
    a = run_groundtruth(TINY, tmp_path / "a.json", 1, data_dir, progress=False)
    b = run_groundtruth(TINY, tmp_path / "b.json", 1, data_dir, progress=False)
    assert a[0]["val_acc"] == b[0]["val_acc"]


def test_other_protocol_is_refused(data_dir, tmp_path):
    path = tmp_path / "gt.json"
    run_groundtruth(TINY, path, 1, data_dir, progress=False)
    before = path.read_text()
    with pytest.raises(ValueError, match="another protocol"):
        run_groundtruth(replace(TINY, epochs=2), path, 2, data_dir, progress=False)
    assert path.read_text() == before


@pytest.mark.parametrize("content", ["{not json", json.dumps({"results": {}}), json.dumps([1, 2])])
def test_damaged_file(tmp_path, content):
    path = tmp_path / "gt.json"
    path.write_text(content)
    with pytest.raises(ValueError, match="damaged or not a ground-truth file"):
        load_groundtruth(path)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="run `ghn groundtruth` first"):
        load_groundtruth(tmp_path / "none.json")


def test_cli(data_dir, tmp_path, capsys):
    out = tmp_path / "gt.json"
    args = ["groundtruth", "--out", str(out), "--num-archs", "2", "--num-nodes", "3", "--num-blocks", "1",
            "--channels", "4", "--train-images", "64", "--epochs", "1", "--batch-size", "32",
            "--val-images", "100", "--data-dir", data_dir, "--quiet"]
    assert main(args) == 0
    assert "2 architectures in" in capsys.readouterr().out
    # a file that also holds untimed records (merged from bench/studies/classification_correlation/groundtruth_retrain.py) grows and summarises
    data = json.loads(out.read_text())
    for r in data["results"].values():
        del r["train_seconds"]
    out.write_text(json.dumps(data))
    assert main(args[:4] + ["3"] + args[5:]) == 0
    assert "3 architectures in" in capsys.readouterr().out
    assert load_groundtruth(out)[0] == TINY
    assert main(args[:-1] + ["--epochs", "2", "--quiet"]) == 2
    assert "another protocol" in capsys.readouterr().err


def test_shards_grow_one_file_together(data_dir, tmp_path, monkeypatch):
    """Shard 0 re-reads the file before each write, so what shard 1 added meanwhile is kept."""
    path = tmp_path / "gt.json"
    real, interleaved = G.train_briefly, []

    def train_while_shard_1_runs(g, *args, **kwargs):
        if not interleaved:  # during shard 0's first architecture, shard 1 does all of its own
            interleaved.append(g.stable_hash())
            run_groundtruth(TINY, path, 4, data_dir, progress=False, shard=(1, 2))
        return real(g, *args, **kwargs)

    monkeypatch.setattr(G, "train_briefly", train_while_shard_1_runs)
    shard0 = run_groundtruth(TINY, path, 4, data_dir, progress=False, shard=(0, 2))
    whole = run_groundtruth(TINY, tmp_path / "whole.json", 4, data_dir, progress=False)
    _, records = load_groundtruth(path)
    assert shard0 == records
    assert [(r["index"], r["hash"], r["val_acc"]) for r in records] == \
        [(r["index"], r["hash"], r["val_acc"]) for r in whole]


def test_shard_cli(data_dir, tmp_path, capsys):
    out = tmp_path / "gt.json"
    args = ["groundtruth", "--out", str(out), "--num-archs", "3", "--num-nodes", "3", "--num-blocks", "1",
            "--channels", "4", "--train-images", "64", "--epochs", "1", "--batch-size", "32",
            "--val-images", "100", "--data-dir", data_dir, "--quiet"]
    assert main(args + ["--shard", "1/2"]) == 0
    assert [r["index"] for r in load_groundtruth(out)[1]] == [1]
    for bad in ["2/2", "1", "a/b"]:
        with pytest.raises(SystemExit):
            main(args + ["--shard", bad])
        assert f"shard {bad!r}" in capsys.readouterr().err


def test_repeats_record_each_run_and_their_mean(data_dir, tmp_path):
    single = run_groundtruth(TINY, tmp_path / "one.json", 2, data_dir, progress=False)
    twice = Protocol(**{**TINY.__dict__, "repeats": 2})
    repeated = run_groundtruth(twice, tmp_path / "two.json", 2, data_dir, progress=False)
    for one, two in zip(single, repeated):
        first, second = two["val_acc_runs"]
        assert first == one["val_acc"]  # run 0 is the single run: same SGD seed
        assert two["val_acc"] == pytest.approx((first + second) / 2)
    assert load_groundtruth(tmp_path / "two.json")[0] == twice


def test_files_without_repeats_read_as_one_run(tmp_path):
    path = tmp_path / "old.json"
    old = {k: v for k, v in TINY.__dict__.items() if k != "repeats"}
    path.write_text(json.dumps({"protocol": old, "results": {}}))
    assert load_groundtruth(path)[0].repeats == 1


def test_repeats_must_be_positive(tmp_path, capsys):
    with pytest.raises(ValueError, match="at least one SGD run"):
        Protocol(repeats=0)
    with pytest.raises(SystemExit) as exc:  # refused where the flag is parsed
        main(["groundtruth", "--out", str(tmp_path / "gt.json"), "--repeats", "0", "--quiet"])
    assert exc.value.code == 2
    assert "argument --repeats: must be a positive integer in [1, 2147483647], got 0" in capsys.readouterr().err
    assert not (tmp_path / "gt.json").exists()


RETRAIN = Path(__file__).resolve().parents[1] / "bench" / "studies" / "classification_correlation" / "groundtruth_retrain.py"


def test_retraining_with_the_next_seed_merges_as_a_repeat(data_dir, tmp_path):
    """bench/studies/classification_correlation/groundtruth_retrain.py --train-seed --merged gives what `--repeats 2` trains directly."""
    gt = tmp_path / "gt.json"
    run_groundtruth(TINY, gt, 3, data_dir, progress=False)
    retrain = [sys.executable, str(RETRAIN), str(gt), "--num-archs", "3", "--data-dir", data_dir,
               "--out", str(tmp_path / "seed1.json")]
    wrong = subprocess.run(retrain + ["--train-seed", "2", "--merged", str(tmp_path / "m.json")],
                           capture_output=True, text=True)
    assert wrong.returncode == 2 and "--train-seed 1" in wrong.stderr
    bad_shard = subprocess.run(retrain + ["--train-seed", "1", "--shard", "2/2"], capture_output=True, text=True)
    assert bad_shard.returncode == 2 and "shard '2/2': need 0 <= r < n" in bad_shard.stderr
    done = subprocess.run(retrain + ["--train-seed", "1", "--merged", str(tmp_path / "m.json")],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    merged_protocol, merged = load_groundtruth(tmp_path / "m.json")
    twice = Protocol(**{**TINY.__dict__, "repeats": 2})
    direct = run_groundtruth(twice, tmp_path / "two.json", 3, data_dir, progress=False)
    assert merged_protocol == twice
    assert [(r["hash"], r["val_acc_runs"]) for r in merged] == [(r["hash"], r["val_acc_runs"]) for r in direct]
    # a retraining file of another protocol is not mixed in
    other = subprocess.run(retrain + ["--epochs", "2"], capture_output=True, text=True)
    assert other.returncode != 0 and "use another --out" in other.stderr


def test_a_shard_is_filled_by_one_run_at_a_time(data_dir, tmp_path, monkeypatch):
    """Issue 29: two runs of one shard trained the same architectures side by side. A shard another
    process holds is refused naming its pid; the other shards go on."""
    from ghn_ext.core.files import InUseError, run_file
    path = tmp_path / "gt.json"
    with run_file(path, "shard0of2"):
        with pytest.raises(InUseError, match=rf"{path} \(shard0of2\) is being written by another run \(pid \d+\)"):
            run_groundtruth(TINY, path, 2, data_dir, progress=False, shard=(0, 2))
        run_groundtruth(TINY, path, 2, data_dir, progress=False, shard=(1, 2))
    assert [r["index"] for r in load_groundtruth(path)[1]] == [1]


def test_the_protocol_is_written_first_so_another_is_refused_before_training(data_dir, tmp_path, monkeypatch):
    """A run under another protocol that starts while the first trains its first architecture is
    refused at once, not after training one of its own."""
    path = tmp_path / "gt.json"
    assert run_groundtruth(TINY, path, 0, data_dir, progress=False) == []
    assert load_groundtruth(path) == (TINY, [])
    monkeypatch.setattr(G, "train_briefly", lambda *a, **k: pytest.fail("trained under a refused protocol"))
    with pytest.raises(ValueError, match="another protocol"):
        run_groundtruth(replace(TINY, epochs=2), path, 1, data_dir, progress=False)
