"""What do the predictors agree on, and what drives the ground truth? Read from a `ghn correlate` folder.

Two checks on the correlation benchmark, with no training or scoring (predictions.json holds the scores):
- consensus: the GHNs' scores standardised and averaged over every subset of k GHNs (k = 1 .. all),
  so that each GHN's own preferences, which vary from seed to seed, average out. If the consensus
  ranks better than a single GHN, seed variance is what limits the GHN; if not, what the GHNs agree on
  is itself unlike the ground truth. How far more seeds could go: with r the members' mean correlation
  with the truth and rho their mean correlation with each other, the consensus of k members like them
  correlates r sqrt(k / (1 + (k-1) rho)) (exactly, for all the members), which tends to r / sqrt(rho)
  however many seeds are added;
- features: the correlation of the ground truth, the consensus and every predictor with simple traits
  of an architecture (nodes of each op per cell, log parameters, log FLOPs, edges per cell).

    python bench/studies/classification_correlation/correlate_consensus.py bench/studies/classification_correlation/groundtruth/classification.json bench/studies/classification_correlation/correlate/predictions.json
"""
from __future__ import annotations

import argparse
import json
import re
from itertools import combinations
from pathlib import Path

import numpy as np

from ghn_ext.studies.correlate import rank_correlations, top_half
from ghn_ext.studies.groundtruth import load_groundtruth


def standardised(x: np.ndarray) -> np.ndarray:
    """To mean 0, standard deviation 1 (each column of a 2-D array)."""
    return (x - x.mean(0)) / x.std(0)


def seed_limit_terms(members: np.ndarray, truth: np.ndarray, rows: np.ndarray) -> tuple[float, float]:
    """Over the architectures `rows`: the members' (rows of `members`) mean correlation with the truth,
    and with each other."""
    z, t = standardised(members[:, rows].T), standardised(truth[rows])
    corr = z.T @ z / len(rows)
    k = len(members)
    return float(np.mean(t @ z / len(rows))), float((corr.sum() - k) / (k * (k - 1)))


def architecture_traits(records: list[dict]) -> dict[str, np.ndarray]:
    ops = sorted({op for r in records for op in r["arch"]["ops"]})
    traits = {op: np.array([r["arch"]["ops"].count(op) for r in records], float) for op in ops}
    traits["log params"] = np.log([r["params"] for r in records])
    traits["log FLOPs"] = np.log([r["flops"] for r in records])
    traits["edges"] = np.array([sum(map(len, r["arch"]["inputs"])) for r in records], float)
    return traits


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("groundtruth")
    p.add_argument("predictions", help="predictions.json of a `ghn correlate` output folder")
    p.add_argument("--match", default=r"GHN[^+]*",
                   help="a regular expression the whole name of each predictor in the consensus matches "
                        "(default: the GHNs alone, not fine-tuned; e.g. 'GHN-N17-4k-seed[0-3]', "
                        "'GHN-N17-4k-seed.\\+SGD-4 \\(batch stats\\)')")
    a = p.parse_args()
    _, records = load_groundtruth(a.groundtruth)
    truth = np.array([r["val_acc"] for r in records])
    preds = json.loads(Path(a.predictions).read_text())
    complete = {name: pred for name, pred in preds.items() if all(r["hash"] in pred["scores"] for r in records)}
    if len(complete) < len(preds):
        print(f"left out, not scored on every architecture: {', '.join(sorted(preds.keys() - complete.keys()))}")
    scores = {name: np.array([pred["scores"][r["hash"]]["score"] for r in records]) for name, pred in complete.items()}
    ghns = [name for name in scores if re.fullmatch(a.match, name)]
    if len(ghns) < 2:
        p.error(f"need at least two predictors whose names match {a.match!r}, found {ghns}")

    print(f"consensus of k of the {len(ghns)} predictors {', '.join(ghns)}, mean over the subsets:")
    print("| k | Pearson R | R, top half | Spearman | lowest R | highest R |\n|---|---|---|---|---|---|")
    for k in range(1, len(ghns) + 1):
        rows = [rank_correlations(sum(standardised(scores[n]) for n in subset), truth)
                for subset in combinations(ghns, k)]
        r = np.array([row["pearson"] for row in rows])
        print(f"| {k} | {r.mean():.3f} | {np.mean([row['pearson_top'] for row in rows]):.3f} | "
              f"{np.mean([row['spearman'] for row in rows]):.3f} | {r.min():.3f} | {r.max():.3f} |")
    members, rng = np.array([scores[n] for n in ghns]), np.random.default_rng(0)
    for label, rows in (("all", np.arange(len(truth))), ("top half", np.flatnonzero(top_half(truth)))):
        single, agreement = seed_limit_terms(members, truth, rows)
        resampled = [seed_limit_terms(members, truth, rng.choice(rows, len(rows))) for _ in range(1000)]
        lo, hi = np.nanpercentile([r / np.sqrt(a) if a > 0 else np.nan for r, a in resampled], [2.5, 97.5])
        print(f"{label}: one correlates {single:.3f} with the truth and {agreement:.3f} with another; the "
              f"consensus of unlimited seeds like these tends to R {single / np.sqrt(agreement):.3f} "
              f"(95% bootstrap interval over the architectures {lo:.3f} to {hi:.3f})")

    consensus = sum(standardised(scores[n]) for n in ghns)
    columns = {"ground truth": truth, "consensus": consensus, **scores}
    print("\nPearson correlation of each trait with the ground truth, the consensus of all, and each predictor:")
    print("| trait | " + " | ".join(columns) + " |\n|---|" + "---|" * len(columns))
    for trait, values in architecture_traits(records).items():
        print(f"| {trait} | " + " | ".join(f"{np.corrcoef(values, c)[0, 1]:+.2f}" for c in columns.values()) + " |")


if __name__ == "__main__":
    main()
