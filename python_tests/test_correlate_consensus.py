"""bench/studies/classification_correlation/correlate_consensus.py: where a consensus of GHN seeds tends as seeds are added.

Synthetic predictors share a preference the truth does not have: each is a*truth + b*shared + c*own
noise, so one correlates r = a / |p| with the truth and rho = (a^2 + b^2) / |p|^2 with another, and
no number of them can correlate more than r / sqrt(rho) = a / sqrt(a^2 + b^2).
"""
import json
import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "studies" / "classification_correlation" / "correlate_consensus.py"


def write_files(tmp_path: Path, truth: np.ndarray, predictors: dict[str, np.ndarray]) -> list[str]:
    hashes = [f"{i:016x}" for i in range(len(truth))]
    arch = {"ops": ["conv3x3", "maxpool3x3"], "inputs": [[0], [0, 1]]}
    results = {h: {"index": i, "hash": h, "val_acc": float(t), "arch": arch, "params": 1000 + i, "flops": 5000 + i}
               for i, (h, t) in enumerate(zip(hashes, truth))}
    gt, preds = tmp_path / "gt.json", tmp_path / "predictions.json"
    gt.write_text(json.dumps({"protocol": {}, "results": results}))
    preds.write_text(json.dumps({name: {"scores": {h: {"score": float(s)} for h, s in zip(hashes, p)}}
                                 for name, p in predictors.items()}))
    return [str(gt), str(preds)]


def test_unlimited_seeds_tend_to_the_share_of_truth_in_what_they_agree_on(tmp_path):
    rng = np.random.default_rng(0)
    n, a, b, c = 2000, 1.0, 1.0, 1.5
    truth, shared = rng.normal(size=(2, n))
    ghns = {f"GHN-s{i}": a * truth + b * shared + c * rng.normal(size=n) for i in range(4)}
    others = {"SGD-4": truth + rng.normal(size=n)}  # not matched by --match: left out of the consensus
    out = subprocess.run([sys.executable, str(SCRIPT), *write_files(tmp_path, 0.5 + 0.01 * truth, {**ghns, **others}),
                          "--match", "GHN-s[0-9]"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    line = next(l for l in out.stdout.splitlines() if l.startswith("all:"))
    single, agreement, limit, lo, hi = map(float, re.findall(r"-?\d+\.\d+", line))
    norm = a * a + b * b + c * c
    assert math.isclose(single, a / math.sqrt(norm), abs_tol=0.03)
    assert math.isclose(agreement, (a * a + b * b) / norm, abs_tol=0.03)
    assert math.isclose(limit, a / math.sqrt(a * a + b * b), abs_tol=0.03)
    assert lo < limit < hi and hi - lo < 0.1
    # the consensus of all four is the formula's R at k = 4, from the same r and rho
    all_four = next(l for l in out.stdout.splitlines() if l.startswith("| 4 |"))
    measured = float(all_four.split("|")[2])
    assert math.isclose(measured, single * math.sqrt(4 / (1 + 3 * agreement)), abs_tol=0.002)
    assert "SGD-4" not in out.stdout.split("\n")[0]  # only the GHNs are members
