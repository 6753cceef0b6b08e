"""How repeatable is the ground truth? Retrain its first architectures with another SGD seed.

The correlation any predictor can reach is capped by the ground truth's own noise: this script trains
the first `--num-archs` architectures of a results file again under the same protocol but another
training seed, and prints the Pearson and Spearman correlation between the two runs.

    OMP_NUM_THREADS=1 python bench/groundtruth_noise.py bench/groundtruth/classification.json --num-archs 10
"""
from __future__ import annotations

import argparse
import dataclasses
import json

import numpy as np
from scipy import stats

from ghn_ext.data import cifar10_splits
from ghn_ext.groundtruth import groundtruth_set, train_under_protocol


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("groundtruth")
    p.add_argument("--num-archs", type=int, default=10)
    p.add_argument("--train-seed", type=int, default=1)
    p.add_argument("--data-dir", default=None)
    a = p.parse_args()
    protocol, archs, records = groundtruth_set(a.groundtruth)
    other = dataclasses.replace(protocol, seed=a.train_seed)   # architectures stay those of the file
    splits = cifar10_splits(a.data_dir)
    train, val = splits.train.head(protocol.train_images), splits.val.head(protocol.val_images)
    first, second = [], []
    for g, r in list(zip(archs, records))[:a.num_archs]:
        acc = train_under_protocol(g, other, train, val)
        first.append(r["val_acc"])
        second.append(acc)
        print(json.dumps({"hash": r["hash"], "seed0": r["val_acc"], f"seed{a.train_seed}": acc}), flush=True)
    f, s = np.array(first), np.array(second)
    print(f"{len(f)} architectures: Pearson {stats.pearsonr(f, s)[0]:.3f}, Spearman {stats.spearmanr(f, s)[0]:.3f}, "
          f"mean |difference| {np.abs(f - s).mean():.4f}, spread of seed 0 (std) {f.std():.4f}")


if __name__ == "__main__":
    main()
