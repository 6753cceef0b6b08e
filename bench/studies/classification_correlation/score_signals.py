"""Which signal of generated weights ranks architectures best: accuracy, loss, or true-class probability?

The GHN scores an architecture by its validation accuracy with generated weights (paper Sec. 5.3).
Accuracy is coarse (one bit per image), so a smoother signal of the same network might rank better:
this scores the ground-truth architectures with each GHN once and records three signals per
architecture, all from the same logits,
- accuracy (the paper's and `ghn correlate`'s score),
- minus the mean cross-entropy,
- the mean softmax probability of the true class,
then correlates each with every ground truth given, for each GHN and for their consensus (standardised
scores averaged over the GHNs, as in correlate_consensus.py). `--val-range a:b` scores on validation
images a..b instead of the protocol's first ones, e.g. disjoint ranges to see how much of a score is
image-sampling noise.

Scores are cached in `--out` (JSON, rewritten after every GHN), so a rerun only scores new GHNs.

    OMP_NUM_THREADS=1 python bench/studies/classification_correlation/score_signals.py --groundtruth bench/studies/classification_correlation/groundtruth/classification.json \
        bench/studies/classification_correlation/groundtruth/classification_4ep.json --ghn N17-s0=runs/gt_ghn_n17_s0/ghn.pt ... \
        --out bench/studies/classification_correlation/score_signals/signals.json
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from correlate_consensus import standardised  # bench/, on the path when run as a script
from ghn_ext.studies.correlate import rank_correlations
from ghn_ext.core.data import Split, cifar10_splits
from ghn_ext.workflows.evaluate import network_logits
from ghn_ext.models.ghn import GraphHyperNetwork
from ghn_ext.studies.groundtruth import groundtruth_set, load_groundtruth
from ghn_ext.core.files import write_json_atomic

SIGNALS = ("accuracy", "-cross-entropy", "p(true class)")


@torch.no_grad()
def signals(ghn: GraphHyperNetwork, graph, split: Split) -> list[float]:
    """Accuracy, minus the mean cross-entropy and the mean true-class probability of one architecture."""
    right = nll = prob = 0.0
    for logits, y in network_logits(graph, ghn(graph), split):
        right += float((logits.argmax(1) == y).sum())
        nll += float(F.cross_entropy(logits, y, reduction="sum"))
        prob += float(logits.softmax(1).gather(1, y[:, None]).sum())
    n = len(split.labels)
    return [right / n, -nll / n, prob / n]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--groundtruth", nargs="+", required=True,
                   help="ground-truth files of the same architectures; the first one's protocol is used")
    p.add_argument("--ghn", nargs="*", default=[], metavar="NAME=PATH")
    p.add_argument("--val-range", default=None, metavar="A:B", help="validation images A..B (default: the "
                   "protocol's first val_images)")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--out", required=True, help="JSON cache of the scores")
    a = p.parse_args()

    protocol, archs, records = groundtruth_set(a.groundtruth[0])
    val = cifar10_splits(a.data_dir).val
    lo, hi = (int(x) for x in a.val_range.split(":")) if a.val_range else (0, protocol.val_images)
    val = Split(val.images[lo:hi], val.labels[lo:hi])
    out = Path(a.out)
    cache = json.loads(out.read_text()) if out.exists() else {}
    key = f"{lo}:{hi}"
    for spec in a.ghn:
        name, _, path = spec.partition("=")
        if name in cache.get(key, {}):
            continue
        ghn = GraphHyperNetwork.load(path, protocol.space).eval()
        start = time.time()
        cache.setdefault(key, {})[name] = {r["hash"]: signals(ghn, g, val) for g, r in zip(archs, records)}
        write_json_atomic(cache, out)
        print(f"scored {name} on validation images {key} in {time.time() - start:.0f} s", flush=True)

    scores = cache.get(key, {})
    if not scores:
        p.error(f"no GHN scored on validation images {key} yet: give --ghn NAME=PATH")
    for gt in a.groundtruth:
        truth_records = load_groundtruth(gt)[1]
        truth = np.array([r["val_acc"] for r in truth_records])
        print(f"\nagainst {gt} (validation images {key}): Pearson R / R top half / Spearman")
        print("| GHN | " + " | ".join(SIGNALS) + " |\n|---|" + "---|" * len(SIGNALS))
        table = {name: np.array([s[r["hash"]] for r in truth_records]) for name, s in scores.items()}
        rows = list(table.items())
        if len(table) > 1:
            rows.append(("consensus", sum(standardised(t) for t in table.values())))
        for name, t in rows:
            cells = []
            for k in range(len(SIGNALS)):
                c = rank_correlations(t[:, k], truth)
                cells.append(f"{c['pearson']:+.3f} / {c['pearson_top']:+.3f} / {c['spearman']:+.3f}")
            print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
