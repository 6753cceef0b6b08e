"""Which cells a predictor puts in the top 10% that do not belong there, and which it misses: the mean
count of each operation per cell (of 6 edges) in the true top decile, the predicted one, the false
positives and the missed cells, and where the predictor ranks the missed ones. Reads the scores that
`ghn correlate --out` cached (predictions.json) and the development table.

    python bench/studies/nb201_ranking/top_decile.py bench/studies/nb201_ranking/tile_channels/predictions.json \
        'block64@0.90h' [--column cifar10_test_200ep]
"""
from __future__ import annotations

import argparse
import collections
import json

import numpy as np

from ghn_ext.spaces import nb201
from ghn_ext.studies.truth_table import read_truth_table

OPS = ("nor_conv_3x3", "nor_conv_1x1", "skip_connect", "avg_pool_3x3", "none")


def op_counts(arch: str) -> collections.Counter:
    return collections.Counter(edge.split("~")[0] for edge in arch.strip("|").replace("|+|", "|").split("|"))


def mean_counts(archs: list[str]) -> str:
    total = collections.Counter()
    for a in archs:
        total.update(op_counts(a))
    return "  ".join(f"{op} {total[op] / max(1, len(archs)):.2f}" for op in OPS)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("predictions")
    p.add_argument("name", help="the start of a predictor's name in predictions.json")
    p.add_argument("--groundtruth", default="../shared/data/nb201/dev_1000.csv")
    p.add_argument("--column", default="cifar10_test_200ep")
    a = p.parse_args()
    cached = json.load(open(a.predictions))
    name = next(k for k in cached if k.startswith(a.name))
    table = read_truth_table(a.groundtruth)
    archs, true = table.archs, table.column(a.column)
    scores = cached[name]["scores"]
    pred = np.array([scores[nb201.network(x).stable_hash()]["score"] for x in archs])
    k = len(archs) // 10
    true_top, pred_top = set(np.argsort(-true)[:k]), set(np.argsort(-pred)[:k])
    false_pos, missed = sorted(pred_top - true_top), sorted(true_top - pred_top)
    ranks = np.argsort(np.argsort(-pred))
    print(f"{name}: top-{k} recall {len(true_top & pred_top) / k:.2f}; mean operations per cell:")
    for label, idx in (("true top", true_top), ("predicted top", pred_top), ("false positives", false_pos),
                       ("missed", missed)):
        print(f"  {label:16s} ({len(idx):3d})  {mean_counts([archs[i] for i in idx])}")
    print(f"  false positives' true accuracy: mean {true[false_pos].mean():.2f}, lowest {true[false_pos].min():.2f}"
          f" (the top decile starts at {np.sort(true)[-k]:.2f})")
    print(f"  the predictor's ranks of the missed cells: median {np.median(ranks[missed]):.0f}, "
          f"quartiles {np.percentile(ranks[missed], 25):.0f}-{np.percentile(ranks[missed], 75):.0f}")


if __name__ == "__main__":
    main()
