"""Ranking quality of GHN runs' snapshots against their training time: the rows of a `ghn correlate
--space nb201` table whose predictor names start with one of PREFIXES (comma-separated, one run each; its
snapshots named as `--ghn PREFIX@0.5h=...`), drawn as Spearman and top-10% recall (95% bootstrap
intervals) against training hours, one line per run, beside the other single predictors as horizontal lines.

    python bench/studies/nb201_ranking/curve.py OUT/table_cifar10_test_200ep.json 'GHN@' curve.png
    python bench/studies/nb201_ranking/curve.py OUT/table_cifar10_test_200ep.json 'runA@,runB@' curve.png
"""
from __future__ import annotations

import json
import sys
from pathlib import Path


def snapshots(rows: list[dict], prefix: str) -> list[dict]:
    """One run's rows, ordered by training time."""
    return sorted((r for r in rows if r["predictor"].startswith(prefix)), key=lambda r: r["initial_hours"])


def main(table: str, prefixes: str, png: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # single predictors only: a rank mean with a proxy ("... + synflow") is neither a snapshot nor a baseline
    rows = [r for r in json.loads(Path(table).read_text()) if "+" not in r["predictor"]]
    runs = {p: snapshots(rows, p) for p in prefixes.split(",")}
    if missing := [p for p, run in runs.items() if not run]:
        sys.exit(f"no row of {table} starts with {', '.join(map(repr, missing))}")
    others = [r for r in rows if not any(r["predictor"].startswith(p) for p in runs)]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key, label in ((axes[0], "spearman", "Spearman"), (axes[1], "top10_recall", "top-10% recall")):
        for i, (prefix, run) in enumerate(runs.items()):
            lo = [r[key] - r["intervals"][key][0] for r in run]
            hi = [r["intervals"][key][1] - r[key] for r in run]
            ax.errorbar([r["initial_hours"] for r in run], [r[key] for r in run], yerr=[lo, hi], marker="o",
                        capsize=3, color=f"C{i}", label=prefix.rstrip("@ ") or "GHN")
        for k, r in enumerate(others):
            ax.axhline(r[key], ls="--", lw=0.8, color=f"C{len(runs) + k}", label=r["predictor"][:40])
        ax.set_xlabel("GHN training time (hours, one core)")
        ax.set_ylabel(label)
    axes[1].legend(fontsize=6, loc="lower right")
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    print("| run | training (h) | Spearman (95% interval) | top-10% recall (95% interval) |\n|---|---|---|---|")
    for prefix, run in runs.items():
        for r in run:
            s, t = r["intervals"]["spearman"], r["intervals"]["top10_recall"]
            print(f"| {prefix.rstrip('@ ')} | {r['initial_hours']:.2f} | {r['spearman']:.3f} ({s[0]:.2f}, {s[1]:.2f}) | "
                  f"{r['top10_recall']:.2f} ({t[0]:.2f}, {t[1]:.2f}) |")


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    main(*sys.argv[1:])
