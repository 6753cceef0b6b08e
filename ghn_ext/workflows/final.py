"""Final training of a chosen architecture (paper appendix 7.3).

SGD with momentum 0.9 and a single-period cosine schedule from lr 0.025, batch 64, cutout, scheduled
drop-path (each summed path of a cell op dropped per example with a probability growing linearly to
0.4 over the run) and an auxiliary classifier on the cell output at 2/3 of the depth whose loss is
weighted 0.5. The paper trains 600 epochs on all 45,000 training images; any shorter run is a matter
of options. Checkpoints are written atomically every few hundred steps and at every epoch's end; a
rerun in the same folder resumes exactly (same batches, same drop masks, same optimiser state).

Under torchrun (ghn_ext.core.distributed) the network and its auxiliary head train under
DistributedDataParallel, each rank on its own rows of a global batch of batch_size images per rank, with
the learning rate multiplied by the number of ranks and warmed up linearly over the first warmup_epochs
(the paper: 32 GPUs, lr x 32, 5 warmup epochs). The lr is a function of the step alone, so a run resumes
on any number of ranks.
"""
from __future__ import annotations

import contextlib
import json
import math
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ghn_ext.core.checks import InputError, require_training_recipe
from ghn_ext.core.data import TensorLoader, cifar10_splits
from ghn_ext.core.distributed import DistContext, all_sum, gather_lists, wrap_ddp
from ghn_ext.workflows.evaluate import network_accuracy
from ghn_ext.core.checkpoints import CheckpointError, resume_state, resuming_from, save_state
from ghn_ext.core.graph import ArchGraph
from ghn_ext.core.files import atomic_save, truncate_log, write_json_atomic
from ghn_ext.nets.network import ArchNetwork, infer_shapes, run_network
from ghn_ext.core.primitives import PRIMITIVES
from ghn_ext.core.progress import progress_bar

STATE_FORMAT = "ghn_ext.final/2"
# ops whose paths drop-path leaves alone: the cell's plumbing and parameter-free pass-throughs
_NOT_DROPPED = {"bottleneck", "identity", "skip_connect", "none"}


@dataclass(frozen=True)
class FinalConfig:
    epochs: int = 600
    batch_size: int = 64
    lr: float = 0.025                    # cosine from lr to 0 over the run (x ranks under torchrun)
    warmup_epochs: float = 5.0           # linear warmup of the scaled lr, with several ranks only
    momentum: float = 0.9
    weight_decay: float = 3e-4
    drop_path: float = 0.4               # final drop probability (linear from 0)
    aux_weight: float = 0.5              # auxiliary head at 2/3 of the depth; 0 disables it
    cutout: int = 16                     # side of the cutout square; 0 disables it
    train_images: Optional[int] = None   # first images of the training split (None: all 45,000)
    val_images: int = 5000
    grad_clip: float = 5.0
    seed: int = 0
    checkpoint_every: int = 200          # steps

    def __post_init__(self):
        require_training_recipe("final training", self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "FinalConfig":
        return cls(**{f.name: d[f.name] for f in fields(cls) if f.name in d})


def cell_blocks(graph: ArchGraph) -> list[int]:
    """Blocks holding cells: all but the first (input, stem) and the last (classifier)."""
    return list(range(1, graph.num_blocks - 1))


def auxiliary_tap(graph: ArchGraph) -> int:
    """The node whose output feeds the auxiliary head: the last node of the cell at 2/3 of the depth."""
    cells = cell_blocks(graph)
    if not cells:
        raise InputError("the architecture has no cells to attach an auxiliary head to")
    block = cells[max(0, (2 * len(cells)) // 3 - 1)]
    return graph.block_ranges()[block][1] - 1


def droppable_nodes(graph: ArchGraph) -> frozenset[int]:
    cells = set(cell_blocks(graph))
    return frozenset(v for v, n in enumerate(graph.nodes)
                     if n.block in cells and PRIMITIVES[n.op].combine == "apply_sum" and n.op not in _NOT_DROPPED)


class AuxiliaryHead(nn.Module):
    """ReLU, 2x2 average pooling, 1x1 conv to 128 channels, BatchNorm, ReLU, linear classifier."""

    def __init__(self, channels: int, num_classes: int = 10):
        super().__init__()
        self.net = nn.Sequential(nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Conv2d(channels, 128, 1, bias=False),
                                 nn.BatchNorm2d(128), nn.ReLU(), nn.Flatten(), nn.Linear(512, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def drop_path(y: torch.Tensor, p: float) -> torch.Tensor:
    """Zero whole examples of path y with probability p, scaling the kept ones by 1/(1-p)."""
    keep = (torch.rand(y.shape[0], 1, 1, 1, device=y.device) >= p).to(y.dtype)
    return y * keep / (1.0 - p)


def learning_rate(cfg: FinalConfig, step: int, total_steps: int, steps_per_epoch: int, world_size: int = 1) -> float:
    """The lr of `step`: cosine from cfg.lr x world_size to 0 over the run; with several ranks, times a
    linear warmup from 1/warmup_steps to 1 over the first warmup_epochs."""
    lr = cfg.lr * world_size * 0.5 * (1.0 + math.cos(math.pi * step / max(1, total_steps)))
    warmup_steps = round(cfg.warmup_epochs * steps_per_epoch) if world_size > 1 else 0
    return lr * min(1.0, (step + 1) / warmup_steps) if warmup_steps > 0 else lr


class _NetWithAux(nn.Module):
    """One training forward (drop-path, auxiliary head) as a module, so that DDP can wrap it."""

    def __init__(self, graph: ArchGraph, net: ArchNetwork, aux: Optional[AuxiliaryHead], tap: int):
        super().__init__()
        self.graph, self.net, self.aux, self.tap = graph, net, aux, tap

    def forward(self, x: torch.Tensor, hook) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        capture = {self.tap: None} if self.aux is not None else None
        logits = run_network(self.graph, x, self.net.node_weights(), self.net.norm_stats(), True, hook, capture)
        return logits, (self.aux(capture[self.tap]) if self.aux is not None else None)


class FinalTrainer:
    def __init__(self, graph: ArchGraph, cfg: FinalConfig, out_dir: str | Path, data_dir: Optional[str] = None,
                 ctx: Optional[DistContext] = None):
        self.graph, self.cfg, self.out = graph.validate(), cfg, Path(out_dir)
        self.ctx = ctx or DistContext()
        self.checkpoint_path = self.out / "checkpoint.pt"
        self.log_path = self.out / "log.jsonl"
        torch.manual_seed(cfg.seed)
        self.net = ArchNetwork(graph)
        self.tap = auxiliary_tap(graph)
        self.aux = AuxiliaryHead(infer_shapes(graph)[self.tap].channels) if cfg.aux_weight > 0 else None
        self.model = wrap_ddp(_NetWithAux(graph, self.net, self.aux, self.tap).to(self.ctx.device), self.ctx)
        if self.ctx.distributed:  # same initial weights everywhere (DDP broadcasts them), own drop masks
            torch.manual_seed(self._rank_seed(0))
        self.droppable = droppable_nodes(graph)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                                         weight_decay=cfg.weight_decay, nesterov=True)
        splits = cifar10_splits(data_dir)
        train = splits.train.head(cfg.train_images)
        self.val, self.test = splits.val.head(cfg.val_images), splits.test
        self.loader = TensorLoader(train.images, train.labels, cfg.batch_size, shuffle=True, augment=True,
                                   cutout=cfg.cutout, drop_last=True, seed=cfg.seed, device=self.ctx.device,
                                   shard=(self.ctx.rank, self.ctx.world_size))
        self.total_steps = cfg.epochs * len(self.loader)
        self.step = 0

    def _rank_seed(self, step: int) -> int:
        return int(np.random.SeedSequence([self.cfg.seed, self.ctx.rank, step]).generate_state(1, np.uint64)[0])

    def lr(self) -> float:
        return learning_rate(self.cfg, self.step, self.total_steps, len(self.loader), self.ctx.world_size)

    # ------------------------------------------------------------------ checkpoints
    def state(self) -> dict[str, Any]:
        """The checkpoint; a collective under torchrun (every rank's RNG state is gathered)."""
        return {"format": STATE_FORMAT, "config": asdict(self.cfg), "arch": self.graph.to_dict(),
                "step": self.step, "net": self.net.state_dict(),
                "aux": self.aux.state_dict() if self.aux else None,
                "optimizer": self.optimizer.state_dict(), "loader": self.loader.state_dict(),
                "rng": gather_lists([self._rng_state()], self.ctx)}

    def _rng_state(self) -> list[torch.Tensor]:
        """The generators drop-path draws from: the CPU's, and this rank's GPU's when it runs on one."""
        dev = self.ctx.device
        return [torch.get_rng_state()] + ([torch.cuda.get_rng_state(dev)] if dev.type == "cuda" else [])

    def _set_rng_state(self, states: list[torch.Tensor]) -> None:
        torch.set_rng_state(states[0])
        if self.ctx.device.type == "cuda" and len(states) > 1:
            torch.cuda.set_rng_state(states[1], self.ctx.device)

    def save_checkpoint(self) -> None:
        state = self.state()
        if self.ctx.is_main:
            save_state(state, self.checkpoint_path)

    def resume(self) -> bool:
        state = resume_state(self.checkpoint_path, STATE_FORMAT, "final-training")
        if state is None:
            return False
        with resuming_from(self.checkpoint_path):
            if ArchGraph.from_dict(state["arch"]).stable_hash() != self.graph.stable_hash():
                raise CheckpointError("it trains another architecture")
            if FinalConfig.from_dict(state["config"]) != self.cfg:
                raise CheckpointError("it was started with other settings; use another folder or the same settings")
            self.net.load_state_dict(state["net"])
            if self.aux:
                self.aux.load_state_dict(state["aux"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.loader.load_state_dict(state["loader"], rescale=True)  # it may have had other ranks
            self.step = int(state["step"])
            rngs = state["rng"]
            if len(rngs) == self.ctx.world_size:  # the same ranks: each continues its own drop masks
                self._set_rng_state(rngs[self.ctx.rank])
            else:
                torch.manual_seed(self._rank_seed(self.step))
        if self.ctx.is_main:
            truncate_log(self.log_path, self.step)
        return True

    # ------------------------------------------------------------------ training
    def train_step(self) -> dict[str, float]:
        x, y = self.loader.next_batch()
        p = self.cfg.drop_path * self.step / max(1, self.total_steps)
        hook = (lambda v, t: drop_path(t, p) if v in self.droppable else t) if p > 0 else None
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr()
        self.model.train()
        logits, aux_logits = self.model(x, hook)
        loss = F.cross_entropy(logits, y)
        if aux_logits is not None:
            loss = loss + self.cfg.aux_weight * F.cross_entropy(aux_logits, y)
        # summed over the ranks before any rank steps, so that all of them stop together on a NaN
        loss_sum, correct_sum = all_sum([loss.item(), int((logits.argmax(1) == y).sum())], self.ctx)
        if not math.isfinite(loss_sum):
            raise FloatingPointError(f"step {self.step}: non-finite loss {loss.item()} on rank {self.ctx.rank}; "
                                     f"last checkpoint {self.checkpoint_path} is intact")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.cfg.grad_clip > 0:
            nn.utils.clip_grad_norm_(self.net.parameters(), self.cfg.grad_clip)
        self.optimizer.step()
        self.step += 1
        world = self.ctx.world_size
        return {"loss": loss_sum / world, "acc": correct_sum / (len(y) * world)}

    def accuracy(self, split) -> float:
        self.net.eval()
        return network_accuracy(self.graph, self.net.node_weights(), split, device=self.ctx.device,
                                norm_stats=self.net.norm_stats())

    def run(self, stop_after: Optional[int] = None, progress: bool = True) -> dict[str, Any]:
        """Train to the end (or `stop_after` more steps, as if killed there); returns the results."""
        self.out.mkdir(parents=True, exist_ok=True)
        end = self.total_steps if stop_after is None else min(self.total_steps, self.step + stop_after)
        per_epoch = len(self.loader)
        main = self.ctx.is_main  # the one rank that evaluates, logs and saves
        if main:
            truncate_log(self.log_path, self.step)  # lines of a restarted run, or past the checkpoint
        with progress_bar(self.total_steps, self.step, "train-final", not (progress and main)) as bar, \
                (self.log_path.open("a") if main else contextlib.nullcontext()) as log:
            while self.step < end:
                t0 = time.perf_counter()
                lr = self.lr()
                stats = self.train_step()
                record = {"step": self.step - 1, **stats, "lr": lr, "seconds": round(time.perf_counter() - t0, 4)}
                epoch_end = self.step % per_epoch == 0
                if epoch_end and main:
                    record["epoch"] = self.step // per_epoch
                    record["val_acc"] = self.accuracy(self.val)
                if main:
                    log.write(json.dumps(record) + "\n")
                    log.flush()
                bar.set_postfix(loss=f"{stats['loss']:.3f}",
                                **({"val_acc": f"{record['val_acc']:.3f}"} if "val_acc" in record else {}))
                bar.update(1)
                if epoch_end or self.step % self.cfg.checkpoint_every == 0:
                    self.save_checkpoint()
        result = {"arch": self.graph.stable_hash(), "step": self.step, "done": self.step == self.total_steps}
        if result["done"] and main:
            result.update(val_acc=self.accuracy(self.val), test_acc=self.accuracy(self.test))
            atomic_save({"arch": self.graph.to_dict(), "net": self.net.state_dict()}, self.out / "final.pt")
            write_json_atomic({**result, "config": asdict(self.cfg)}, self.out / "result.json")
        return result


__all__ = ["FinalConfig", "FinalTrainer", "learning_rate", "AuxiliaryHead", "auxiliary_tap", "droppable_nodes", "drop_path"]
