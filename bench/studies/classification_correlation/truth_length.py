"""Does a predictor rank longer training better? Ground truths of the same architectures, trained longer and longer.

The paper ranks against 50 epochs of training; these machines afford a few. If a predictor's R grows
with the length of the training it is compared with, part of its gap to the paper is the brevity of
our ground truth. For every group of predictors (the standardised mean of their scores, a consensus,
as in correlate_consensus.py) and every ground truth, over the architectures all files share:
- Pearson R with the ground truth, and a paired bootstrap of how R changes from the shortest to the
  longest training (the same architectures resampled for both, so their noise largely cancels);
- R with what each longer training adds: the longer accuracies' residual after a linear fit on the
  shorter ones. A predictor that sees only early training has none of it.
No training or scoring: predictions.json holds the scores.

    python bench/studies/classification_correlation/truth_length.py bench/studies/classification_correlation/groundtruth/classification.json \
        bench/studies/classification_correlation/groundtruth/classification_4ep_100.json bench/studies/classification_correlation/groundtruth/classification_8ep.json \
        --predictions bench/studies/classification_correlation/correlate/predictions.json --group 'GHNs alone=GHN-N17-4k-seed[0-5]'
"""
from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import numpy as np

from correlate_consensus import standardised
from ghn_ext.studies.correlate import rank_correlations
from ghn_ext.studies.groundtruth import load_groundtruth


def residual(longer: np.ndarray, shorter: np.ndarray) -> np.ndarray:
    """What `longer` holds beyond a linear function of `shorter`."""
    return longer - np.polyval(np.polyfit(shorter, longer, 1), shorter)


def bootstrap_change(pred: np.ndarray, first: np.ndarray, last: np.ndarray, draws: int, seed: int = 0):
    """Mean and 95% interval of R(pred, last) - R(pred, first) over architectures resampled together."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(pred), size=(draws, len(pred)))
    diffs = np.array([np.corrcoef(pred[i], last[i])[0, 1] - np.corrcoef(pred[i], first[i])[0, 1] for i in idx])
    return float(diffs.mean()), *np.percentile(diffs, [2.5, 97.5])


def parse_group(text: str) -> tuple[str, str]:
    name, sep, pattern = text.rpartition("=")  # the name may hold "=" (N=17), the pattern not
    if not sep or not name or not pattern:
        raise argparse.ArgumentTypeError(f"expected NAME=REGEX, got {text!r}")
    return name, pattern


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("groundtruths", nargs="+", help="ground-truth files, shortest training first")
    p.add_argument("--predictions", required=True, help="predictions.json of a `ghn correlate` output folder")
    p.add_argument("--group", type=parse_group, action="append", required=True,
                   help="NAME=REGEX: the predictors whose whole names match, as one consensus row (repeatable)")
    p.add_argument("--bootstrap", type=int, default=2000, help="resamples for the interval of the change")
    a = p.parse_args()
    if len(a.groundtruths) < 2:
        p.error("give at least two ground truths to compare")

    truths = []
    for path in a.groundtruths:
        try:
            protocol, records = load_groundtruth(path)
        except (FileNotFoundError, ValueError) as exc:
            p.error(str(exc))
        label = f"{protocol.epochs} ep" + (f" x{protocol.repeats}" if protocol.repeats > 1 else "")
        truths.append((label, {r["hash"]: r["val_acc"] for r in records}))
    try:
        preds = json.loads(Path(a.predictions).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        p.error(f"cannot read the predictions {a.predictions}: {exc}")
    hashes = [h for h in truths[0][1] if all(h in t for _, t in truths[1:])]
    if len(hashes) < 10:
        p.error(f"the ground truths share only {len(hashes)} architectures; need at least 10")
    acc = [np.array([t[h] for h in hashes]) for _, t in truths]
    labels = [label for label, _ in truths]

    print(f"{len(hashes)} architectures in every ground truth")
    for i in range(1, len(acc)):
        c = rank_correlations(acc[i - 1], acc[i])
        print(f"  {labels[i - 1]} against {labels[i]}: Pearson {c['pearson']:.3f}, Spearman {c['spearman']:.3f}")
    added = [residual(acc[i], acc[i - 1]) for i in range(1, len(acc))]
    print("\n| predictors | " + " | ".join(f"R, {label}" for label in labels)
          + f" | change {labels[0]} -> {labels[-1]} (95%) | "
          + " | ".join(f"R with {labels[i]} beyond {labels[i - 1]}" for i in range(1, len(acc))) + " |")
    print("|---" * (len(acc) + len(added) + 2) + "|")
    for name, pattern in a.group:
        members = [k for k, v in preds.items() if re.fullmatch(pattern, k) and all(h in v.get("scores", {}) for h in hashes)]
        if not members:
            p.error(f"--group {name}: no predictor scored on every architecture matches {pattern!r}")
        score = sum(standardised(np.array([preds[m]["scores"][h]["score"] for h in hashes])) for m in members)
        change, low, high = bootstrap_change(score, acc[0], acc[-1], a.bootstrap)
        cells = [f"{np.corrcoef(score, y)[0, 1]:.3f}" for y in acc]
        cells.append(f"{change:+.3f} ({low:+.2f} to {high:+.2f})")
        cells += [f"{np.corrcoef(score, y)[0, 1]:+.3f}" for y in added]
        print(f"| {name} ({len(members)}) | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
