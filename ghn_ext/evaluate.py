"""Accuracy of architectures on generated weights: the GHN's search signal."""
from __future__ import annotations

from typing import Sequence

import torch

from .data import Split, normalize
from .ghn import GraphHyperNetwork
from .graph import ArchGraph
from .nets.network import run_network


@torch.no_grad()
def network_accuracy(graph: ArchGraph, weights, split: Split, image_batch: int = 100,
                     device: str | torch.device = "cpu", norm_stats=None) -> float:
    """Top-1 accuracy of `graph` on `split` with `weights`. Without `norm_stats` BatchNorm uses each
    batch's statistics, as when the GHN was trained, so batches should be large enough to estimate
    them (>= 100); with them (a trained ArchNetwork's running statistics) it runs in eval mode."""
    correct = 0
    for start in range(0, len(split.labels), image_batch):
        x = normalize(split.images[start:start + image_batch]).to(device)
        y = split.labels[start:start + image_batch].to(device)
        logits = run_network(graph, x, weights, norm_stats, training=norm_stats is None)
        logits = logits[-1] if isinstance(logits, list) else logits
        correct += int((logits.argmax(1) == y).sum())
    return correct / max(1, len(split.labels))


@torch.no_grad()
def score_architectures(ghn: GraphHyperNetwork, archs: Sequence[ArchGraph], split: Split,
                        image_batch: int = 100) -> list[float]:
    """Validation accuracy of each architecture with weights generated for all of them in one batch."""
    device = next(ghn.parameters()).device
    weights = ghn(list(archs))
    return [network_accuracy(g, w, split, image_batch, device) for g, w in zip(archs, weights)]
