"""Does adaptive evaluation pick the same top candidates as full evaluation? (issue 28)

Scores the first N candidates of a search (`search_architectures`, seed 0) two ways with the same GHN:
  full:     every candidate on all `val_images`, computed as two halves of the images, so that
  noise:    the rankings on the two halves (disjoint images) show how much the top-k depends on
            which images score it: the agreement full evaluation itself can promise;
  adaptive: `run_search` at the given adaptive settings.
Prints Spearman over the adaptive finalists, top-k overlaps, and writes agreement.json.

    python bench/studies/adaptive_search/agreement.py --space nb201 --num-archs 300 --out runs/agreement
"""
from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

import torch
from scipy.stats import spearmanr

from ghn_ext.core.data import cifar10_splits
from ghn_ext.core.files import write_json_atomic
from ghn_ext.core.progress import progress_bar
from ghn_ext.workflows.evaluate import network_score_sum
from ghn_ext.workflows.score import load_ghn
from ghn_ext.workflows.search import SearchConfig, for_ghn, run_search, search_architectures


def top(scores: dict[str, float], k: int) -> set[str]:
    return set(sorted(scores, key=lambda h: -scores[h])[:k])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--space", default="nb201")
    ap.add_argument("--ckpt", default=None, help="default: the space's shipped GHN")
    ap.add_argument("--num-archs", type=int, default=300)
    ap.add_argument("--val-images", type=int, default=5000)
    ap.add_argument("--min-images", type=int, default=500)
    ap.add_argument("--eta", type=int, default=3)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    ghn = load_ghn(a.ckpt, a.space).eval()
    # the GHN's own skeleton and signal (how it scores)
    cfg = for_ghn(SearchConfig(num_archs=a.num_archs, val_images=a.val_images, min_images=a.min_images, eta=a.eta), ghn)
    out = Path(a.out)
    adaptive = run_search(ghn, cfg, out / "adaptive")

    # full evaluation, as two halves of the images (cached: a rerun reads them back)
    cache = out / "halves.json"
    halves = json.loads(cache.read_text()) if cache.exists() else {}
    images = cifar10_splits().val.head(a.val_images).prepared()
    mid = a.val_images // 2
    archs = search_architectures(replace(cfg, num_archs=a.num_archs), a.space)
    with progress_bar(len(archs), len(halves), "full evaluation") as bar:
        for g in archs:
            if g.stable_hash() in halves:
                continue
            with torch.no_grad():
                w = ghn(g)
            halves[g.stable_hash()] = [network_score_sum(g, w, images.part(0, mid), cfg.signal),
                                       network_score_sum(g, w, images.part(mid, a.val_images), cfg.signal)]
            write_json_atomic(halves, cache)
            bar.update(1)
    full = {h: (s[0] + s[1]) / a.val_images for h, s in halves.items()}
    first = {h: s[0] / mid for h, s in halves.items()}
    second = {h: s[1] / (a.val_images - mid) for h, s in halves.items()}
    finalists = [r for r in adaptive if r["images"] == a.val_images]
    assert all(abs(r["score"] - full[r["hash"]]) < 1e-9 for r in finalists), "finalists differ from full scores"
    adaptive_scores = {r["hash"]: -i for i, r in enumerate(adaptive)}  # its ranking order
    result = {"config": vars(a), "finalists": len(finalists),
              "noise_spearman_halves": spearmanr([first[h] for h in full], [second[h] for h in full]).statistic}
    for k in (1, 5, 10, 20):
        result[f"top{k}_adaptive_vs_full"] = len(top(adaptive_scores, k) & top(full, k)) / k
        result[f"top{k}_half_vs_half"] = len(top(first, k) & top(second, k)) / k
        result[f"top{k}_half_vs_full"] = (len(top(first, k) & top(full, k)) + len(top(second, k) & top(full, k))) / (2 * k)
    write_json_atomic(result, out / "agreement.json")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
