"""A few steps of plain SGD on an architecture's own weights: the top-best search's final pick, the
SGD-k and GHN+SGD-k predictors of the correlation studies, and the ground truth's training."""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from ghn_ext.core.data import Split, TensorLoader
from ghn_ext.core.graph import ArchGraph
from ghn_ext.nets.network import ArchNetwork, NodeWeights
from ghn_ext.workflows.evaluate import network_accuracy


def train_briefly(graph: ArchGraph, train: Split, val: Split, steps: int, lr: float = 0.025,
                  batch_size: int = 64, seed: int = 0, init: Optional[NodeWeights] = None,
                  batch_stats: bool = False, device: str | torch.device = "cpu") -> float:
    """SGD (momentum 0.9, cosine) for `steps` steps; returns validation accuracy.

    From scratch, or from the weights `init` (a GHN's generated weights: GHN+SGD-k). BatchNorm's
    running statistics are evaluated, or with `batch_stats` each validation batch's own statistics,
    as a GHN's score is: after a few steps the running averages (momentum 0.1) are still mostly
    their initial values, so an evaluation on them ranks networks by how far those are off."""
    torch.manual_seed(seed)
    net = ArchNetwork(graph, weights=init).to(device)
    opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9, weight_decay=3e-4, nesterov=True)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(1, steps))
    loader = TensorLoader(train.images, train.labels, batch_size, shuffle=True, augment=True,
                          drop_last=True, seed=seed)
    net.train()
    for x, y in loader.batches(steps):
        loss = F.cross_entropy(net(x.to(device)), y.to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    net.eval()
    return network_accuracy(graph, net.node_weights(), val, device=device,
                            norm_stats=None if batch_stats else net.norm_stats())
