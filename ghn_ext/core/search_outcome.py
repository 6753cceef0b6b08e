"""What a search that trusts a predictor returns: the true accuracy of its top-scored architecture.

A search draws N candidates and keeps the one its predictor scores highest. Over the random draws of N
from a table of architectures with known accuracies, "top pick at N" is the expected true accuracy of
that pick; the oracle's is the best of the N, the regret their difference. The same for the mean of the
predictor's top five (a search that trains a few finalists). A ranking can have a high Spearman and
still pick poorly: near the top, where a search looks, is where the order counts.

The expectations are exact, not sampled: in a random N-subset of n architectures ordered by score, the
one at rank r (0 = best) is the subset's j-th best with probability C(r, j) C(n-1-r, N-1-j) / C(n, N).
Tied scores are broken at random, so tied architectures share their expected positions. Intervals are
percentile-bootstrap intervals over the architectures (the table resampled with replacement), so they
say how much a figure owes to having only these architectures.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import numpy as np

from ghn_ext.core.checks import InputError

SIZES = (10, 30, 100, 300, None)  # N; None: every architecture of the table
TOP = 5


def position_weights(n: int, size: int, positions: int) -> np.ndarray:
    """(positions, n): P[j, r] = the probability that rank r of n is the j-th best of a random subset of `size`."""
    from scipy.special import gammaln  # here: scipy takes a while to import

    def log_choose(a, b):
        return gammaln(a + 1) - gammaln(b + 1) - gammaln(a - b + 1)

    r = np.arange(n, dtype=float)
    out = np.zeros((positions, n))
    for j in range(min(positions, size)):
        ok = (r >= j) & (n - 1 - r >= size - 1 - j)
        rr = r[ok]
        out[j, ok] = np.exp(log_choose(rr, j) + log_choose(n - 1 - rr, size - 1 - j) - log_choose(n, size))
    return out


def _ordered_truth(p: np.ndarray, t: np.ndarray) -> np.ndarray:
    """The true accuracies in the order of the scores, best first, each tie group at its mean (a tie
    broken at random gives every member each of the group's positions alike)."""
    order = np.argsort(-p, kind="stable")
    _, group, counts = np.unique(p[order], return_inverse=True, return_counts=True)
    return (np.bincount(group, weights=t[order]) / counts)[group]


def _outcomes(p: np.ndarray, t: np.ndarray, weights: np.ndarray) -> tuple[float, float, float, float]:
    """(pick, oracle, top-5 mean, oracle's top-5 mean) for position weights of this n and N."""
    by_score, by_truth = _ordered_truth(p, t), np.sort(t)[::-1]
    top = weights.sum(axis=0) / weights.shape[0]
    return (float(weights[0] @ by_score), float(weights[0] @ by_truth), float(top @ by_score), float(top @ by_truth))


def top_pick(predicted: Sequence[float], true: Sequence[float], sizes: Sequence[Optional[int]] = SIZES,
             resamples: int = 1000, level: float = 0.95, seed: int = 0) -> list[dict]:
    """Per N of `sizes` (None, or N at least the table's size: the whole table): the expected true accuracy
    of the predictor's top pick ("pick") and of its top five ("top5") in a random subset of N, the
    oracle's ("oracle", "top5_oracle"), "regret" = oracle - pick, and 95% bootstrap intervals of pick and
    regret over `resamples` resamples of the architectures."""
    p, t = np.asarray(predicted, dtype=float), np.asarray(true, dtype=float)
    if p.shape != t.shape or p.ndim != 1 or len(p) < 2:
        raise InputError(f"need one predicted score per true accuracy for at least 2 architectures, got "
                         f"{p.shape} and {t.shape}")
    if not (np.isfinite(p).all() and np.isfinite(t).all()):
        raise InputError("scores and accuracies must be finite numbers")
    n = len(p)
    rng = np.random.default_rng(seed)
    lo, hi = 100 * (1 - level) / 2, 100 * (1 + level) / 2
    rows = []
    for size in dict.fromkeys(n if s is None or s >= n else int(s) for s in sizes):
        w = position_weights(n, size, min(TOP, size))
        pick, oracle, top5, top5_oracle = _outcomes(p, t, w)
        row = {"n": size, "all": size == n, "pick": pick, "oracle": oracle, "regret": oracle - pick,
               "top5": top5, "top5_oracle": top5_oracle, "intervals": {}}
        if resamples:
            boot = np.array([_outcomes(p[idx], t[idx], w)[:2] for idx in rng.integers(0, n, (resamples, n))])
            row["intervals"] = {"pick": tuple(float(x) for x in np.percentile(boot[:, 0], [lo, hi])),
                                "regret": tuple(float(x) for x in np.percentile(boot[:, 1] - boot[:, 0], [lo, hi]))}
        rows.append(row)
    return rows


def regret_plot(curves: dict[str, Sequence[dict]], path, title: str = "") -> None:
    """Regret (oracle - pick) against N, one line per predictor (top_pick's rows)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, rows in curves.items():
        ax.plot([r["n"] for r in rows], [r["regret"] for r in rows], marker="o", label=name)
    ax.set_xscale("log")
    ax.set_xlabel("candidates N (a search's random sample)")
    ax.set_ylabel("regret: best of N - top pick (accuracy points)")
    ax.set_ylim(bottom=0)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def markdown(rows_by_predictor: dict[str, Sequence[dict]]) -> str:
    """One row per predictor: its top pick (interval) and regret at each N, then its top-5 mean at each N."""
    first = next(iter(rows_by_predictor.values()))
    sizes = [("all " if r["all"] else "") + f"{r['n']}" for r in first]
    head = ("| predictor | " + " | ".join(f"top pick at N={s} (regret)" for s in sizes) + " | "
            + " | ".join(f"top-5 mean at N={s}" for s in sizes) + " |\n" + "|---" * (1 + 2 * len(sizes)) + "|\n")

    def cell(r):
        ci = r["intervals"].get("pick")
        return f"{r['pick']:.2f}" + (f" ({ci[0]:.2f}, {ci[1]:.2f})" if ci else "") + f" ({r['regret']:+.2f})"

    oracle = "| best of the N (oracle) | " + " | ".join(f"{r['oracle']:.2f}" for r in first) + " | " + " | ".join(
        f"{r['top5_oracle']:.2f}" for r in first) + " |\n"
    return head + oracle + "".join(
        f"| {name} | " + " | ".join(cell(r) for r in rows) + " | " + " | ".join(f"{r['top5']:.2f}" for r in rows)
        + " |\n" for name, rows in rows_by_predictor.items())


__all__ = ["SIZES", "TOP", "markdown", "position_weights", "regret_plot", "top_pick"]
