"""What top-10% recall a predictor of a given Spearman can expect: synthetic predictors made of the true
accuracy plus Gaussian noise (in accuracy points, or in rank quantiles), each noise level drawn many
times, their mean Spearman and recall printed. It scores no architecture: it tells how far apart the
issue's two targets (Spearman >= 0.80, recall >= 0.5) are on a given table, since the top decile of
NAS-Bench-201 is packed within about 1.5 accuracy points.

    python bench/studies/nb201_ranking/recall_vs_spearman.py [--column cifar10_test_200ep]
"""
from __future__ import annotations

import argparse

import numpy as np
from scipy.stats import rankdata

from ghn_ext.core.rank_measures import ranking_measures
from ghn_ext.studies.truth_table import read_truth_table

NOISE = {"accuracy points": (0.5, 0.75, 1.0, 1.5, 2.0), "rank quantiles": (0.08, 0.10, 0.12, 0.15, 0.20)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--groundtruth", default="../shared/data/nb201/dev_1000.csv")
    p.add_argument("--column", default="cifar10_test_200ep")
    p.add_argument("--draws", type=int, default=200)
    a = p.parse_args()
    true = read_truth_table(a.groundtruth).column(a.column)
    rng = np.random.default_rng(0)
    print("| noise in | noise std | Spearman | top-10% recall (5%-95% of draws) |\n|---|---|---|---|")
    for unit, levels in NOISE.items():
        base = true if unit == "accuracy points" else rankdata(true) / len(true)
        for std in levels:
            measures = [ranking_measures(base + rng.normal(0, std, len(true)), true) for _ in range(a.draws)]
            rho = np.mean([m["spearman"] for m in measures])
            recall = np.array([m["top10_recall"] for m in measures])
            lo, hi = np.percentile(recall, [5, 95])
            print(f"| {unit} | {std} | {rho:.3f} | {recall.mean():.2f} ({lo:.2f}-{hi:.2f}) |")


if __name__ == "__main__":
    main()
