"""Accuracy of architectures on generated weights: the GHN's search signal (its scoring path lives in
:mod:`ghn_ext.models.scoring`, re-exported here); for anytime networks the accuracy of every exit and the
area under the accuracy-FLOPs curve."""
from __future__ import annotations

import bisect
from typing import Optional, Sequence

import torch

from ghn_ext.core.checks import InputError
from ghn_ext.core.data import Split, network_input
from ghn_ext.core.graph import ArchGraph
from ghn_ext.models.scoring import (  # noqa: F401  (the names scripts import from here)
    IMAGE_BATCH,
    SIGNALS,
    check_signal,
    network_accuracy,
    network_logits,
    network_score_sum,
    score_architectures,
    scorer_digest,
)
from ghn_ext.nets.anytime import Exit, run_anytime


@torch.no_grad()
def exit_accuracies(graph: ArchGraph, weights, split: Split, schedule: Sequence[Exit], image_batch: int = IMAGE_BATCH,
                    device: str | torch.device = "cpu", norm_stats=None) -> list[float]:
    """Top-1 accuracy of every exit of an anytime network on `split`, in schedule order (BatchNorm as
    in :func:`network_accuracy`)."""
    correct = [0] * len(schedule)
    for start in range(0, len(split.labels), image_batch):
        x = network_input(split.images[start:start + image_batch], device)
        y = split.labels[start:start + image_batch].to(device)
        for k, logits in enumerate(run_anytime(graph, x, weights, list(schedule), None, norm_stats,
                                               training=norm_stats is None)):
            correct[k] += int((logits.argmax(1) == y).sum())
    return [c / max(1, len(split.labels)) for c in correct]


def accuracy_at(flops: Sequence[float], accuracies: Sequence[float], budget: float) -> float:
    """Anytime accuracy at `budget` FLOPs: that of the last exit reached (0 before the first one)."""
    k = bisect.bisect_right(list(flops), budget)
    return accuracies[k - 1] if k else 0.0


def curve_area(flops: Sequence[float], accuracies: Sequence[float], lo: float, hi: float,
               normalize_range: bool = True) -> float:
    """Area under the anytime accuracy-FLOPs curve over [lo, hi] FLOPs: the step function
    :func:`accuracy_at` integrated exactly. Divided by hi - lo unless told otherwise, it is the mean
    accuracy over budgets uniform in the range, so areas over the same range compare directly."""
    if len(flops) != len(accuracies) or not flops:
        raise InputError(f"need one accuracy per exit and at least one exit; got {len(flops)} FLOP counts "
                         f"and {len(accuracies)} accuracies")
    if any(b < a for a, b in zip(flops, flops[1:])):
        raise InputError(f"exit FLOPs must be non-decreasing (cumulative), got {list(flops)}")
    if not lo < hi:
        raise InputError(f"the FLOPs range needs lo < hi, got [{lo}, {hi}]")
    area = 0.0
    edges = [lo] + [f for f in flops if lo < f < hi] + [hi]
    for a, b in zip(edges, edges[1:]):
        area += accuracy_at(flops, accuracies, a) * (b - a)
    return area / (hi - lo) if normalize_range else area


def plot_curves(curves: dict[str, tuple[Sequence[float], Sequence[float]]], path,
                flops_range: Optional[tuple[float, float]] = None, title: str = "") -> None:
    """Accuracy against cumulative FLOPs, one line of exits per network (paper Fig. 3), drawn as the
    step function whose area :func:`curve_area` takes; the range it is taken over shaded."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for name, (flops, accs) in curves.items():
        ax.plot([f / 1e6 for f in flops], [100 * a for a in accs], marker="o", drawstyle="steps-post",
                label=name)
    if flops_range is not None:
        ax.axvspan(flops_range[0] / 1e6, flops_range[1] / 1e6, color="gray", alpha=0.1)
    ax.set_xlabel("FLOPs per image (M)")
    ax.set_ylabel("top-1 accuracy (%)")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
