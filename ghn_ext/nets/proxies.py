"""Zero-cost proxies: scores of an untrained network that are published as predictors of its trained
accuracy, the cheap baselines a GHN has to beat.

* synflow (Tanaka et al., NeurIPS 2020; as a NAS proxy: Abdelfattah et al., ICLR 2021): with every weight
  replaced by its absolute value, BatchNorm removed and an all-ones input, R = sum of the logits; the
  score is sum over weights of w * dR/dw. Reported here as log(1 + score): it spans hundreds of orders
  of magnitude, and a cell that cuts its input off scores 0 (a ranking is unchanged).
* NASWOT (Mellor et al., ICML 2021): over a batch of images, each image's binary code of which ReLU units
  are active; the score is log |det K| where K[i, j] counts the units on which images i and j agree.
  Computed as log det(K + I): the same to about 1e-6 (K's entries count up to millions of units), and a
  network that gives two images one code (a cell that cuts its input off) ranks last instead of at -inf.

Both run on freshly initialised weights (He initialisation, drawn from `seed`), like the published ones.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.overrides import TorchFunctionMode

from ghn_ext.core.graph import ArchGraph
from ghn_ext.nets.network import ArchNetwork, infer_shapes, norm_count, run_network
from ghn_ext.core.checks import InputError


def _fresh_weights(graph: ArchGraph, input_size, seed: int) -> dict[int, dict[str, Tensor]]:
    torch.manual_seed(seed)
    net = ArchNetwork(graph, input_size, track_running_stats=False)
    return {v: {n: w.detach() for n, w in p.items()} for v, p in net.node_weights().items()}


def synflow(graph: ArchGraph, input_size: tuple[int, int, int] = (3, 32, 32), seed: int = 0) -> float:
    """log of the synaptic-flow score of `graph` at initialisation (float64 throughout)."""
    weights = {v: {n: w.abs().double().requires_grad_() for n, w in p.items()}
               for v, p in _fresh_weights(graph, input_size, seed).items()}
    shapes = infer_shapes(graph, input_size)
    # BatchNorm "removed": evaluation mode with mean 0 and variance 1 leaves x / sqrt(1 + eps)
    identity_norm = {(v, k): (torch.zeros(shapes[v].channels, dtype=torch.float64),
                              torch.ones(shapes[v].channels, dtype=torch.float64))
                     for v, count in norm_count(graph).items() for k in range(count)}
    x = torch.ones((1, *input_size), dtype=torch.float64)
    logits = run_network(graph, x, weights, identity_norm, training=False)
    total = sum(o.sum() for o in logits) if isinstance(logits, list) else logits.sum()
    params = [w for p in weights.values() for w in p.values()]
    grads = torch.autograd.grad(total, params, allow_unused=True)
    score = sum(float((w.detach() * g).sum()) for w, g in zip(params, grads) if g is not None)
    return math.log1p(score)


class _ReluCodes(TorchFunctionMode):
    """Adds, for every ReLU the network applies, the agreement counts of its binary codes to `kernel`."""

    def __init__(self, batch: int):
        super().__init__()
        self.kernel = torch.zeros(batch, batch, dtype=torch.float64)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func in (F.relu, torch.relu, Tensor.relu):
            code = (out.detach() > 0).flatten(1).double()
            self.kernel += code @ code.t() + (1 - code) @ (1 - code).t()
        return out


@torch.no_grad()
def naswot(graph: ArchGraph, images: Tensor, seed: int = 0) -> float:
    """log |det K| of the ReLU-code agreement kernel of `images` (normalised, N x C x H x W; the
    published score uses a batch of 128) on freshly initialised weights, BatchNorm on batch statistics."""
    if images.dim() != 4 or len(images) < 2:
        raise InputError(f"NASWOT needs a batch of at least 2 images (N, C, H, W), got shape {tuple(images.shape)}")
    weights = _fresh_weights(graph, tuple(images.shape[1:]), seed)
    with _ReluCodes(len(images)) as codes:
        run_network(graph, images, weights)
    return float(torch.linalg.slogdet(codes.kernel + torch.eye(len(images), dtype=torch.float64))[1])


__all__ = ["synflow", "naswot"]
