"""How well a predictor's scores order architectures like their true accuracies, with the uncertainty
that comes from having only so many architectures.

Every measure is computed on the same pairs and again on bootstrap resamples of the architectures (drawn
with replacement), whose 2.5th and 97.5th percentiles give a 95% interval:
  * Spearman's rho, Kendall's tau and Pearson's R over all architectures;
  * the same three over the top half (architectures whose true accuracy is above the mean);
  * top-10% recall: the share of the truly best 10% that the predictor also puts in its best 10%.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from ghn_ext.core.checks import InputError

MEASURES = ("spearman", "kendall", "pearson", "spearman_top", "kendall_top", "pearson_top", "top10_recall")


def _corr(name: str, p: np.ndarray, t: np.ndarray) -> float:
    from scipy import stats  # here, not at the top: it takes most of a second to import

    if len(p) < 3 or np.ptp(p) == 0 or np.ptp(t) == 0:  # undefined for constant scores
        return math.nan
    if name == "spearman":
        return float(stats.spearmanr(p, t)[0])
    if name == "kendall":
        return float(stats.kendalltau(p, t)[0])
    return float(stats.pearsonr(p, t)[0])


def top_recall(predicted: np.ndarray, true: np.ndarray, fraction: float = 0.1) -> float:
    """Share of the architectures in the true top `fraction` that are also in the predicted top
    `fraction` (ties in the prediction are broken by position, so a constant predictor scores by luck)."""
    k = max(1, int(round(fraction * len(true))))
    best_true = set(np.argsort(-true, kind="stable")[:k].tolist())
    best_pred = set(np.argsort(-predicted, kind="stable")[:k].tolist())
    return len(best_true & best_pred) / k


def rank_mean(*scores: Sequence[float]) -> np.ndarray:
    """The mean of each predictor's ranks scaled to [0, 1]: a combination that no predictor's scale
    dominates (ties share their mean rank)."""
    from scipy.stats import rankdata

    return np.mean([(rankdata(s) - 1) / max(1, len(s) - 1) for s in scores], axis=0)


def ranking_measures(predicted: Sequence[float], true: Sequence[float]) -> dict[str, float]:
    """Every measure of MEASURES for one set of (predicted, true) pairs."""
    p, t = np.asarray(predicted, dtype=float), np.asarray(true, dtype=float)
    if p.shape != t.shape or p.ndim != 1:
        raise InputError(f"need one predicted score per true accuracy, got {p.shape} and {t.shape}")
    if len(p) < 3:
        raise InputError(f"need at least 3 architectures to measure a ranking, got {len(p)}")
    if not (np.isfinite(p).all() and np.isfinite(t).all()):
        raise InputError("scores and accuracies must be finite numbers")
    top = t > t.mean()
    out = {name: _corr(name, p, t) for name in ("spearman", "kendall", "pearson")}
    out.update({f"{name}_top": _corr(name, p[top], t[top]) for name in ("spearman", "kendall", "pearson")})
    out["top10_recall"] = top_recall(p, t)
    return out


def bootstrap_intervals(predicted: Sequence[float], true: Sequence[float], resamples: int = 1000,
                        level: float = 0.95, seed: int = 0) -> dict[str, tuple[float, float]]:
    """A percentile-bootstrap interval of every measure, resampling the architectures."""
    p, t = np.asarray(predicted, dtype=float), np.asarray(true, dtype=float)
    rng = np.random.default_rng(seed)
    draws: dict[str, list[float]] = {m: [] for m in MEASURES}
    for _ in range(resamples):
        idx = rng.integers(0, len(p), len(p))
        for name, value in ranking_measures(p[idx], t[idx]).items():
            draws[name].append(value)
    lo, hi = 100 * (1 - level) / 2, 100 * (1 + level) / 2
    out = {}
    for name, values in draws.items():
        v = np.asarray(values)
        v = v[np.isfinite(v)]
        out[name] = (float(np.percentile(v, lo)), float(np.percentile(v, hi))) if len(v) else (math.nan, math.nan)
    return out


__all__ = ["MEASURES", "rank_mean", "ranking_measures", "bootstrap_intervals", "top_recall"]
