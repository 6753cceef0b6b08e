"""Anytime search and its baseline (paper Sec. 5.2, appendix 7.3).

- :func:`score_anytime` ranks anytime networks by the area under their accuracy-FLOPs curve with
  GHN-generated weights (the search criterion), over a FLOPs range fixed for all of them.
- :func:`msdnet_graph` is an MSDNet-style baseline (Huang et al. 2018) written in the same graph
  language: layers of nodes at three scales, each node densely reading every earlier node of its
  scale plus the latest node one scale finer, concatenated and bottlenecked like the anytime space's
  nodes; exits on the coarsest scale. (MSDNet downsamples with strided convolutions; here the finer
  input is average-pooled into the bottleneck, so both networks are built from the same node type.)
- :func:`match_width` picks the base width of an anytime genotype whose FLOPs match a budget.
- :func:`train_anytime` is the final training recipe: SGD momentum 0.9, lr 0.1 divided by 10 at 50%
  and 75% of the epochs, batch 64, every exit's cross-entropy averaged; with a checkpoint path it saves
  atomically every epoch and a rerun continues where it stopped (same batches, same optimiser state).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import torch
import torch.nn.functional as F

from ghn_ext.core.checks import InputError, require_training_recipe
from ghn_ext.core.data import Split, TensorLoader
from ghn_ext.workflows.evaluate import IMAGE_BATCH, curve_area, exit_accuracies
from ghn_ext.core.checkpoints import CheckpointError, resume_state, resuming_from, save_state
from ghn_ext.models.ghn import GraphHyperNetwork
from ghn_ext.core.graph import ArchGraph, Node
from ghn_ext.nets.anytime import AnytimeNetwork, exit_schedule
from ghn_ext.nets.network import count_flops
from ghn_ext.core.progress import progress_bar
from ghn_ext.spaces import anytime


@torch.no_grad()
def score_anytime(ghn: GraphHyperNetwork, archs: Sequence[ArchGraph], split: Split,
                  flops_range: tuple[float, float], image_batch: int = IMAGE_BATCH) -> list[dict[str, Any]]:
    """Per architecture: its exits' cumulative FLOPs, their accuracies with generated weights on
    `split`, and the normalised area under that curve over `flops_range`."""
    device = next(ghn.parameters()).device
    out = []
    for g, w in zip(archs, ghn(list(archs))):
        schedule = exit_schedule(g)
        flops = [e.flops for e in schedule]
        accs = exit_accuracies(g, w, split, schedule, image_batch, device)
        out.append({"hash": g.stable_hash(), "exit_flops": flops, "exit_acc": accs,
                    "area": curve_area(flops, accs, *flops_range)})
    return out


def msdnet_graph(layers: int = 10, channels: int = anytime.CHANNELS, exit_every: int = 2,
                 scales: Sequence[int] = (32, 16, 8), num_classes: int = anytime.NUM_CLASSES) -> ArchGraph:
    """The MSDNet-style baseline: `layers` layers of one 3x3-conv node per scale (widths as in the
    anytime space), an exit on the coarsest node of every `exit_every`-th layer and of the last."""
    if layers < 1 or exit_every < 1 or channels < 1:
        raise InputError(f"layers, exit_every and channels must be positive, got {layers}, {exit_every}, "
                         f"{channels}")
    nodes = [Node("input", 0, 3), Node("stem_conv", 0, channels)]
    edges: list[tuple[int, int]] = [(0, 1)]
    same_scale: dict[int, list[int]] = {s: [] for s in scales}   # earlier nodes per scale
    for layer in range(layers):
        exit_here = (layer + 1) % exit_every == 0 or layer == layers - 1
        finer = 1  # the stem feeds the finest scale of the first layer
        for k, s in enumerate(scales):
            v = len(nodes)
            ins = same_scale[s] + ([finer] if layer == 0 or k > 0 else [])
            exit_node = exit_here and k == len(scales) - 1
            nodes.append(Node("conv3x3", 1, anytime.width(channels, s), scale=s, exit=exit_node))
            edges += [(u, v) for u in ins]
            same_scale[s].append(v)
            finer = v
            if exit_node:
                nodes.append(Node("classifier", 1, num_classes))
                edges.append((v, len(nodes) - 1))
    meta = {"baseline": "msdnet", "layers": layers, "channels": channels, "exit_every": exit_every,
            "scales": list(scales)}
    return ArchGraph(nodes, edges, "custom", meta).validate()


def match_width(graph: ArchGraph, max_flops: float, input_size=(3, 32, 32)) -> ArchGraph:
    """`graph` (an anytime genotype) at the largest base width whose total FLOPs stay within
    `max_flops`; ValueError when even width 1 exceeds it."""
    def flops(c: int) -> int:
        return count_flops(anytime.with_channels(graph, c), input_size)

    if flops(1) > max_flops:
        raise InputError(f"even base width 1 needs {flops(1):,} FLOPs, over the budget of {max_flops:,.0f}")
    lo, hi = 1, 2
    while flops(hi) <= max_flops:
        lo, hi = hi, hi * 2
    while hi - lo > 1:  # FLOPs grow with the width
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if flops(mid) <= max_flops else (lo, mid)
    return anytime.with_channels(graph, lo)


@dataclass(frozen=True)
class AnytimeTrainConfig:
    epochs: int = 300            # the paper's (appendix 7.3); shorter by option
    batch_size: int = 64
    lr: float = 0.1              # divided by 10 at 50% and 75% of the epochs
    momentum: float = 0.9
    weight_decay: float = 1e-4
    train_images: Optional[int] = None
    seed: int = 0

    def __post_init__(self):
        require_training_recipe("anytime training", self)


CHECKPOINT_FORMAT = "ghn_ext.anytime_final/1"


def train_anytime(graph: ArchGraph, cfg: AnytimeTrainConfig, train: Split, test: Split,
                  progress: bool = False, checkpoint: Optional[str | Path] = None,
                  stop_after: Optional[int] = None) -> Optional[dict[str, Any]]:
    """Train an anytime network from scratch with every exit's loss; its exits' test accuracies, their
    cumulative FLOPs and the last training loss. With `checkpoint`, resume from that file when it holds
    this run and save to it every epoch and at the end; `stop_after` steps end the call early (as if
    killed there) and return None."""
    torch.manual_seed(cfg.seed)
    net = AnytimeNetwork(graph)
    train = train.head(cfg.train_images)
    loader = TensorLoader(train.images, train.labels, cfg.batch_size, shuffle=True, augment=True,
                          drop_last=True, seed=cfg.seed)
    steps = cfg.epochs * len(loader)  # >= 1: the config has epochs, the loader refuses to hold no batch
    opt = torch.optim.SGD(net.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, [steps // 2, (3 * steps) // 4], gamma=0.1)
    step, loss = 0, torch.tensor(math.nan)
    run = {"hash": graph.stable_hash(), "config": asdict(cfg)}

    def save() -> None:
        save_state({"format": CHECKPOINT_FORMAT, **run, "step": step, "loss": loss.item(),
                    "net": net.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                    "loader": loader.state_dict()}, checkpoint)

    state = resume_state(checkpoint, CHECKPOINT_FORMAT, "anytime-training") if checkpoint is not None else None
    if state is not None:
        if {k: state.get(k) for k in run} != run:
            raise CheckpointError(f"{checkpoint} holds another run (architecture or settings differ); "
                                  "use another output folder or the same settings")
        with resuming_from(Path(checkpoint)):  # a valid tag over damaged contents
            net.load_state_dict(state["net"])
            opt.load_state_dict(state["optimizer"])
            sched.load_state_dict(state["scheduler"])
            loader.load_state_dict(state["loader"])
            step, loss = int(state["step"]), torch.tensor(state["loss"])
    end = steps if stop_after is None else min(steps, step + stop_after)
    net.train()
    with progress_bar(total=steps, initial=step, desc=f"train {graph.stable_hash()}", disable=not progress) as bar:
        while step < end:
            x, y = loader.next_batch()
            loss = torch.stack([F.cross_entropy(o, y) for o in net(x)]).mean()
            if not torch.isfinite(loss):
                raise FloatingPointError(f"non-finite loss {loss.item()} while training {graph.stable_hash()}")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            bar.update(1)
            if checkpoint is not None and (step % len(loader) == 0 or step == steps):
                save()
    if step < steps:
        return None
    net.eval()
    accs = exit_accuracies(graph, net.node_weights(), test, net.schedule, norm_stats=net.norm_stats())
    return {"hash": graph.stable_hash(), "exit_flops": net.exit_flops, "exit_acc": accs,
            "final_loss": loss.item(), "steps": steps}
