"""Ranking quality of one GHN run's snapshots against their training time: the rows of a `ghn correlate
--space nb201` table whose predictor names start with PREFIX (one per snapshot, as `--ghn PREFIX@10min=...`),
drawn as Spearman and top-10% recall (95% bootstrap intervals) against training hours, beside the
baselines' Spearman as horizontal lines.

    python bench/studies/nb201_ranking/curve.py OUT/table_cifar10_test_200ep.json 'GHN@' curve.png
"""
from __future__ import annotations

import json
import sys
from pathlib import Path


def main(table: str, prefix: str, png: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = json.loads(Path(table).read_text())
    ghn = sorted((r for r in rows if r["predictor"].startswith(prefix) and "+" not in r["predictor"]),
                 key=lambda r: r["initial_hours"])
    if not ghn:
        sys.exit(f"no row of {table} starts with {prefix!r}")
    others = [r for r in rows if not r["predictor"].startswith(prefix)]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    hours = [r["initial_hours"] for r in ghn]
    for ax, key, label in ((axes[0], "spearman", "Spearman"), (axes[1], "top10_recall", "top-10% recall")):
        values = [r[key] for r in ghn]
        lo = [r[key] - r["intervals"][key][0] for r in ghn]
        hi = [r["intervals"][key][1] - r[key] for r in ghn]
        ax.errorbar(hours, values, yerr=[lo, hi], marker="o", capsize=3, label=prefix.rstrip("@ ") or "GHN")
        for k, r in enumerate(others):
            ax.axhline(r[key], ls="--", lw=0.8, color=f"C{k + 1}", label=r["predictor"][:40])
        ax.set_xlabel("GHN training time (hours, one core)")
        ax.set_ylabel(label)
    axes[1].legend(fontsize=6, loc="lower right")
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    print("| training (h) | Spearman (95% interval) | top-10% recall (95% interval) |\n|---|---|---|")
    for r in ghn:
        s, t = r["intervals"]["spearman"], r["intervals"]["top10_recall"]
        print(f"| {r['initial_hours']:.2f} | {r['spearman']:.3f} ({s[0]:.2f}, {s[1]:.2f}) | "
              f"{r['top10_recall']:.2f} ({t[0]:.2f}, {t[1]:.2f}) |")


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    main(*sys.argv[1:])
