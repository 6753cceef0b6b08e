"""bench/studies/classification_correlation/truth_length.py: a predictor's R against ground truths of growing training length.

Synthetic files: the short training sees an early trait of each architecture, the long one adds a
late trait; a predictor of the late trait must gain with length and match what the longer training
adds, a predictor of the early trait must not.
"""
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "studies" / "classification_correlation" / "truth_length.py"


def write_truth(path: Path, epochs: int, accs: dict[str, float]) -> str:
    results = {h: {"index": i, "hash": h, "val_acc": a} for i, (h, a) in enumerate(accs.items())}
    path.write_text(json.dumps({"protocol": {"epochs": epochs}, "results": results}))
    return str(path)


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True)


def row(out: str, name: str) -> list[str]:
    line = next(l for l in out.splitlines() if l.startswith(f"| {name} "))
    return [c.strip() for c in line.strip("|").split("|")]


def test_late_trait_gains_with_length_and_matches_what_longer_training_adds(tmp_path):
    rng = np.random.default_rng(0)
    hashes = [f"{i:016x}" for i in range(40)]
    early, late, noise = rng.normal(size=(3, 40))
    short = 0.4 + 0.02 * early + 0.005 * noise
    long_ = short + 0.02 * late
    gt1 = write_truth(tmp_path / "short.json", 1, dict(zip(hashes, short)))
    # the long file also holds an architecture the short one lacks: only the shared 40 are compared
    gt4 = write_truth(tmp_path / "long.json", 4, dict(zip(hashes + ["f" * 16], [*long_, 0.9])))
    scores = {"late-a": late, "late-b": late + 0.1 * rng.normal(size=40), "early": early}
    preds = tmp_path / "predictions.json"
    preds.write_text(json.dumps({name: {"scores": {h: {"score": float(s)} for h, s in zip(hashes, v)}}
                                 for name, v in scores.items()}))

    done = run(gt1, gt4, "--predictions", str(preds), "--group", "late N=2=late-.",  # a name may hold "="
               "--group", "early=early",
               "--bootstrap", "200")
    assert done.returncode == 0, done.stderr
    assert "40 architectures in every ground truth" in done.stdout
    consensus = (late - late.mean()) / late.std() + (scores["late-b"] - scores["late-b"].mean()) / scores["late-b"].std()
    name, r_short, r_long, change, beyond = row(done.stdout, "late N=2")
    assert name == "late N=2 (2)"
    assert float(r_short) == round(np.corrcoef(consensus, short)[0, 1], 3)
    assert float(r_long) == round(np.corrcoef(consensus, long_)[0, 1], 3)
    low, high = map(float, re.search(r"\(([-+.\d]+) to ([-+.\d]+)\)", change).groups())
    assert 0 < low < high  # the gain with length is resolved
    added = long_ - np.polyval(np.polyfit(short, long_, 1), short)
    assert float(beyond) == round(np.corrcoef(consensus, added)[0, 1], 3) and float(beyond) > 0.9
    _, r_short, r_long, change, beyond = row(done.stdout, "early")
    assert float(r_short) > float(r_long) and float(beyond) < 0.5


@pytest.mark.slow
def test_bad_input_is_named(tmp_path):
    hashes = [f"{i:016x}" for i in range(12)]
    gt = write_truth(tmp_path / "gt.json", 1, {h: 0.1 * i for i, h in enumerate(hashes)})
    preds = tmp_path / "predictions.json"
    preds.write_text(json.dumps({"p": {"scores": {h: {"score": 1.0 * i} for i, h in enumerate(hashes)}}}))
    missing = run(gt, gt, "--predictions", str(preds), "--group", "x=nothing")
    assert missing.returncode == 2 and "no predictor scored on every architecture matches 'nothing'" in missing.stderr
    malformed = run(gt, gt, "--predictions", str(preds), "--group", "no-equals-sign")
    assert malformed.returncode == 2 and "expected NAME=REGEX" in malformed.stderr
    one = run(gt, "--predictions", str(preds), "--group", "p=p")
    assert one.returncode == 2 and "at least two ground truths" in one.stderr
    few = write_truth(tmp_path / "few.json", 4, {h: 0.5 for h in hashes[:5]})
    assert "share only 5 architectures" in run(gt, few, "--predictions", str(preds), "--group", "p=p").stderr
    absent = run(gt, str(tmp_path / "absent.json"), "--predictions", str(preds), "--group", "p=p")
    assert absent.returncode != 0 and "does not exist" in absent.stderr
