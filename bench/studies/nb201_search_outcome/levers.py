"""Issue 43: why the shipped nb201 GHN's top pick is poor, and what lifts it (top pick at N, exact
expectations over random subsets of the dev table's cells: ghn_ext.core.search_outcome).

    python bench/studies/nb201_search_outcome/levers.py deep      # score every dev cell in a deeper skeleton
    python bench/studies/nb201_search_outcome/levers.py table     # the levers' tables (reads the caches)

`deep` scores each cell of dev_1000.csv with the shipped GHN through ghn.score (the library's one scoring
path) with the skeleton changed to --cells-per-stage (default 5, the benchmark's depth) on --images
validation images, and caches the scores in deep_cps<k>_<images>.json beside this file (a rerun scores
only what is missing). `table` combines them with the cached predictions of bench/studies/nb201_ranking
(the shipped GHN's scores, the parameter count, synflow) by rank mean (ghn_ext.core.rank_measures),
nothing fitted, and prints Spearman, top-10% recall and the top pick at N for each column; finalists:
re-ranking only the GHN's best fraction of each random subset.
"""
from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
TABLE = HERE.parents[3] / "shared" / "data" / "nb201" / "dev_1000.csv"
SHIPPED = "conv35@0.59h (loss, 1000 images, 1 cells/stage, 16 ch)"  # the shipped GHN's row in the caches
COLUMNS = ("cifar10_test_200ep", "cifar100_test_200ep", "imagenet16_test_200ep")


def cells() -> list[dict]:
    return list(csv.DictReader(TABLE.open()))


def deep(a: argparse.Namespace) -> None:
    import ghn_ext
    archs = [r["arch"] for r in cells()]
    path = HERE / f"deep_cps{a.cells_per_stage}_{a.images}.json"
    done = json.loads(path.read_text()) if path.exists() else {}
    ghn = ghn_ext.GraphHyperNetwork.pretrained("nb201")
    todo = [c for c in archs if c not in done]
    for start in range(0, len(todo), 16):
        chunk = todo[start:start + 16]
        scores = ghn.score(chunk, images=a.images, skeleton={"cells_per_stage": a.cells_per_stage})
        done.update(zip(chunk, scores))
        path.write_text(json.dumps(done))
        print(f"{len(done)} / {len(archs)}", flush=True)


def cached(archs: list[str]) -> dict[str, np.ndarray]:
    """Every predictor of the nb201_ranking studies' caches that scored all cells, by name."""
    from ghn_ext.spaces import nb201
    hashes = [nb201.network(c).stable_hash() for c in archs]
    out = {}
    for f in sorted((HERE.parent / "nb201_ranking").glob("*/predictions.json")):
        for name, entry in json.loads(f.read_text()).items():
            if set(hashes) <= entry["scores"].keys():
                out[name] = np.array([entry["scores"][h]["score"] for h in hashes])
    return out


def table(a: argparse.Namespace) -> None:
    from scipy.stats import rankdata
    from ghn_ext.core.rank_measures import rank_mean, ranking_measures
    from ghn_ext.core.search_outcome import top_pick
    rows = cells()
    archs = [r["arch"] for r in rows]
    pred = cached(archs)
    ghn, params, syn = pred[SHIPPED], pred["parameter count"], pred["synflow (seed 0)"]
    deep_scores = json.loads((HERE / f"deep_cps{a.cells_per_stage}_{a.images}.json").read_text())
    deeper = np.array([deep_scores[c] for c in archs])
    d = f"GHN in {a.cells_per_stage} cells/stage"
    variants = {"GHN (shipped, 1 cell/stage)": ghn, d: deeper, "parameter count": params, "synflow": syn,
                "12-epoch SGD (table)": np.array([float(r["cifar10_val_12ep"]) for r in rows]),
                "GHN + params": rank_mean(ghn, params), "GHN + synflow": rank_mean(ghn, syn),
                f"GHN + {d}": rank_mean(ghn, deeper), f"GHN + {d} + params": rank_mean(ghn, deeper, params),
                f"GHN + {d} + synflow": rank_mean(ghn, deeper, syn)}
    rng = np.random.default_rng(0)
    for column in COLUMNS:
        true = np.array([float(r[column]) for r in rows])
        print(f"\n{column}: Spearman, top-10% recall, top pick at N = 10, 30, 100, 300, all\n")
        print("| predictor | Spearman | recall | " + " | ".join(f"N={n}" for n in ("10", "30", "100", "300", "all"))
              + " |\n|---|---|---|---|---|---|---|---|")
        oracle = top_pick(true, true, resamples=0)
        print("| best of the N | | | " + " | ".join(f"{r['oracle']:.2f}" for r in oracle) + " |")
        for name, p in variants.items():
            m = ranking_measures(p, true)
            picks = top_pick(p, true, resamples=a.resamples)
            print(f"| {name} | {m['spearman']:.3f} | {m['top10_recall']:.2f} | " + " | ".join(
                f"{r['pick']:.2f} ({r['intervals']['pick'][0]:.2f}, {r['intervals']['pick'][1]:.2f})"
                if r["intervals"] else f"{r['pick']:.2f}" for r in picks) + " |")
        # finalists: the first stage's best fraction of each random subset of N, re-ranked by GHN + deeper + params
        firsts = {"GHN": ghn, "GHN + params": rank_mean(ghn, params), "GHN + synflow": rank_mean(ghn, syn)}
        for first, ranked in firsts.items():
            for fraction in (0.1, 0.3, 0.5):
                means = []
                for n in (10, 30, 100, 300, len(true)):
                    picks = []
                    for _ in range(1 if n == len(true) else a.draws):
                        sub = rng.choice(len(true), n, replace=False)
                        fin = sub[np.argsort(-ranked[sub], kind="stable")[:max(5, int(np.ceil(fraction * n)))]]
                        combined = sum(rankdata(v[fin]) for v in (ghn, deeper, params))
                        picks.append(true[fin[np.argmax(combined)]])
                    means.append(f"{np.mean(picks):.2f}")
                print(f"| finalists: {first}'s best {fraction:.0%}, then GHN + {d} + params | | | "
                      + " | ".join(means) + " |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=("deep", "table"))
    ap.add_argument("--cells-per-stage", type=int, default=5)
    ap.add_argument("--images", type=int, default=500)
    ap.add_argument("--resamples", type=int, default=200)
    ap.add_argument("--draws", type=int, default=1500)
    a = ap.parse_args()
    (deep if a.what == "deep" else table)(a)


if __name__ == "__main__":
    main()
