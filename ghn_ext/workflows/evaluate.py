"""Accuracy of architectures on generated weights: the GHN's search signal; for anytime networks the
accuracy of every exit and the area under the accuracy-FLOPs curve."""
from __future__ import annotations

import bisect
from dataclasses import asdict
from typing import Optional, Sequence

import torch
import torch.nn.functional as F

from ghn_ext.core.data import Split, network_input
from ghn_ext.models.ghn import GraphHyperNetwork
from ghn_ext.core.graph import ArchGraph
from ghn_ext.core.files import content_digest
from ghn_ext.nets.anytime import Exit, run_anytime
from ghn_ext.nets.network import run_network
from ghn_ext.core.checks import InputError

IMAGE_BATCH = 100  # images per forward pass, and so per BatchNorm statistics: part of what a score means


@torch.inference_mode()  # the decorator, not a with-block: grad mode switches back at every yield
def network_logits(graph: ArchGraph, weights, split: Split, image_batch: int = IMAGE_BATCH,
                   device: str | torch.device = "cpu", norm_stats=None):
    """(logits, labels) of `graph` with `weights`, batch by batch over `split` (the last exit's logits
    for an anytime network). Without `norm_stats` BatchNorm uses each batch's statistics, as when the
    GHN was trained, so batches should be large enough to estimate them (>= 100); with them (a trained
    ArchNetwork's running statistics) it runs in eval mode."""
    for start in range(0, len(split.labels), image_batch):
        x = network_input(split.images[start:start + image_batch], device)
        y = split.labels[start:start + image_batch].to(device)
        logits = run_network(graph, x, weights, norm_stats, training=norm_stats is None,
                             check_weights=start == 0)
        yield (logits[-1] if isinstance(logits, list) else logits), y


def network_accuracy(graph: ArchGraph, weights, split: Split, image_batch: int = IMAGE_BATCH,
                     device: str | torch.device = "cpu", norm_stats=None) -> float:
    """Top-1 accuracy of `graph` on `split` with `weights` (BatchNorm as in :func:`network_logits`)."""
    correct = sum(int((logits.argmax(1) == y).sum())
                  for logits, y in network_logits(graph, weights, split, image_batch, device, norm_stats))
    return correct / max(1, len(split.labels))


# What a GHN's score of an architecture is: its validation accuracy with generated weights (the paper's),
# or its validation loss, negated so that higher is better for both. The loss is a finer signal: on
# NAS-Bench-201 it ranks cells clearly better than the accuracy does (bench/RESULTS.md).
SIGNALS = ("accuracy", "loss")
DEFAULT_SIGNAL = {"classification": "accuracy", "anytime": "accuracy", "nb201": "loss"}


def check_signal(signal: str) -> None:
    if signal not in SIGNALS:
        raise InputError(f"unknown scoring signal {signal!r}; choose one of {', '.join(SIGNALS)}")


def network_score_sum(graph: ArchGraph, weights, split: Split, signal: str = "accuracy",
                      image_batch: int = IMAGE_BATCH, device: str | torch.device = "cpu") -> float:
    """The `signal` summed over the images of `split`: correct predictions, or the negated cross-entropy
    (BatchNorm as in :func:`network_logits`). A sum, so that scores over consecutive parts of a
    validation set add up to the score over all of it (adaptive search scores in parts)."""
    check_signal(signal)
    # Summed on the device and read once: a read per batch would make a GPU wait for Python every batch.
    # Each batch's float32 sum is added in float64, as Python floats would.
    total = torch.zeros((), dtype=torch.float64, device=device)
    for logits, y in network_logits(graph, weights, split, image_batch, device):
        total += ((logits.argmax(1) == y).sum() if signal == "accuracy"
                  else -F.cross_entropy(logits, y, reduction="sum")).double()
    return float(total)


@torch.inference_mode()
def scorer_digest(ghn: GraphHyperNetwork, image_batch: int) -> str:
    """What a score depends on besides the architecture, the signal and the images: the GHN's parameters
    and configuration and the BatchNorm batch. Cached scores carry it, so that a rerun with another GHN
    or batch rescores instead of reusing scores it did not compute."""
    return content_digest([asdict(ghn.config), image_batch, ghn.state_dict()])[:16]


def score_architectures(ghn: GraphHyperNetwork, archs: Sequence[ArchGraph], split: Split,
                        image_batch: int = IMAGE_BATCH, signal: str = "accuracy") -> list[float]:
    """The `signal` score of each architecture (mean over `split`) with weights generated for all of
    them in one batch."""
    check_signal(signal)
    device = next(ghn.parameters()).device
    weights = ghn(list(archs))
    return [network_score_sum(g, w, split, signal, image_batch, device) / max(1, len(split.labels))
            for g, w in zip(archs, weights)]


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
