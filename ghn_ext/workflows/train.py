"""Training a GHN over random architectures (paper Sec. 4.5, 5.1.1, appendix 7.2).

The same loop trains the one-shot weight-sharing baseline (``model="oneshot"``, ghn_ext.models.oneshot):
both map architectures to their weights and learn from the networks' loss.

Each step draws fresh random architectures, generates their weights, and minimises the cross-entropy
of those networks on one batch of CIFAR-10 training images with Adam (lr 1e-3, halved at 50% and 75%
of the run). The run is a pure function of its config: step s draws its architectures from a
generator seeded by (seed, s) and the loader's batches are counter-based, so a run resumed from its
last checkpoint continues exactly as if it had never stopped.

Under torchrun (ghn_ext.core.distributed) the model trains under DistributedDataParallel: step s draws
archs_per_step architectures per rank from the same (seed, s) generator, each rank takes its own, and
its own rows of a global batch of batch_size images per rank; the gradients are averaged over the ranks.
Rank 0 writes the log and the checkpoints, which resume on any number of ranks.
"""
from __future__ import annotations

import contextlib
import json
import math
import random
import time
from collections import Counter
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from ghn_ext.core.checks import InputError, MAX_SEED, require_int
from ghn_ext.core.data import TensorLoader, cifar10_splits
from ghn_ext.core.distributed import DistContext, all_sum, deal, gather_lists, wrap_ddp
from ghn_ext.workflows.evaluate import score_architectures
from ghn_ext.core.checkpoints import CheckpointError, resume_state, resuming_from, save_state
from ghn_ext.core.graph import GraphError
from ghn_ext.models.ghn import GHNConfig, GraphHyperNetwork
from ghn_ext.core.files import truncate_log
from ghn_ext.nets.network import run_network
from ghn_ext.models.oneshot import OneShotConfig, OneShotModel
from ghn_ext.core.progress import progress_bar
from ghn_ext.models.scoring import ScoringConfig
from ghn_ext.spaces.spec import get_space
from ghn_ext.core.run_log import read_log, training_seconds

TRAIN_STATE_FORMAT = "ghn_ext.train/1"
# Settings a resumed run may change: they do not alter what is trained, only bookkeeping.
RESUMABLE_CHANGES = {"steps", "checkpoint_every", "snapshot_every", "eval_every", "eval_archs", "eval_images",
                     "data_dir"}


# TrainConfig's settings that a space may set otherwise (ghn_ext.spaces.spec.SearchSpace.train_defaults),
# with their values where it does not
SPACE_SETTINGS: dict[str, Any] = {"steps": 1000, "num_nodes": 7, "channels": None, "cells_per_stage": 5,
                                  "snapshot_every": 0, "op_weights": None}
UNIFORM = "uniform"  # op_weights that asks for uniform edge ops where the space's default weights them


def _flat_settings(cfg: TrainConfig) -> dict[str, Any]:
    """cfg's fields with the GHN's own under "ghn.<name>", so that a refused resume names the GHN setting."""
    d = asdict(cfg)
    return {**{k: v for k, v in d.items() if k != "ghn"}, **{f"ghn.{k}": v for k, v in d["ghn"].items()}}


class NonFiniteLossError(FloatingPointError):
    """Training produced a NaN or infinite loss; the run stops instead of training through it."""


@dataclass(frozen=True)
class TrainConfig:
    """A GHN training run. Settings left at None take the space's recipe (its spec's train_defaults; for
    nb201 20,000 steps of one cell per stage at 16 channels, convolution-heavy cells), then SPACE_SETTINGS:
    `TrainConfig(space=...)` trains what `ghn train --space ...` does."""
    space: str = "classification"
    steps: Optional[int] = None     # default 1000 (nb201: 20,000)
    batch_size: int = 64            # images per step (paper: 64)
    archs_per_step: int = 1         # architectures whose losses are averaged each step
    lr: float = 1e-3
    grad_clip: float = 5.0          # max gradient norm; 0 disables
    ema: float = 0.0                # decay of an exponential moving average of the parameters, saved
                                    # and validated instead of the last step's (0 disables)
    num_nodes: Optional[int] = None  # nodes per cell while training (classification: the paper's N=7)
    num_blocks: int = 18            # cells of the classification networks
    channels: Optional[int] = None  # initial width (nb201: 16; classification: the space's, 32)
    cells_per_stage: Optional[int] = None  # NAS-Bench-201 skeleton (default 5; nb201 training: 1)
    op_weights: Optional[dict[str, float] | str] = None  # NAS-Bench-201: relative weights of the edge ops in
                                    # the training cells ("uniform": all alike; default: the space's)
    augment: bool = True
    seed: int = 0
    checkpoint_every: int = 50
    snapshot_every: Optional[int] = None  # also keep the model every this many steps as <model>_step<k>.pt (0: never):
                                    # ranking against training time, snapshot ensembles
    eval_every: int = 0             # steps between validation checks on unseen architectures (0: end only)
    eval_archs: int = 8
    eval_images: int = 500
    data_dir: Optional[str] = None
    ghn: Optional[GHNConfig] = None  # the GHN's settings; None: GHNConfig's defaults for this space
    model: str = "ghn"              # or "oneshot": the weight-sharing baseline of the same networks

    def __post_init__(self):
        spec = get_space(self.space)
        for name, default in SPACE_SETTINGS.items():
            if getattr(self, name) is None:
                object.__setattr__(self, name, spec.train_defaults.get(name, default))
        if self.op_weights == UNIFORM:
            object.__setattr__(self, "op_weights", None)
        if not 0.0 <= self.ema < 1.0:
            raise InputError(f"ema is a decay in [0, 1) (0: off), not {self.ema}")
        for name in ("steps", "batch_size", "archs_per_step", "num_nodes", "num_blocks", "cells_per_stage",
                     "checkpoint_every", "eval_archs", "eval_images"):
            require_int("training", name, getattr(self, name), 1)
        for name in ("snapshot_every", "eval_every"):
            require_int("training", name, getattr(self, name), 0)
        if self.channels is not None:
            require_int("training", "channels", self.channels, 1)
        require_int("training", "seed", self.seed, 0, MAX_SEED)
        if not (math.isfinite(self.lr) and 0.0 < self.lr <= 10.0):
            raise InputError(f"training lr must be in (0, 10], got {self.lr}")
        try:  # checked and completed (0 for ops left out) before it is saved
            object.__setattr__(self, "op_weights", spec.check_op_weights(self.op_weights))
        except GraphError as exc:
            raise InputError(f"training {exc}") from exc
        if self.ghn is None:
            object.__setattr__(self, "ghn", GHNConfig(space=self.space))
        elif not isinstance(self.ghn, GHNConfig):
            raise InputError(f"training ghn must be a GHNConfig, not {type(self.ghn).__name__}")
        elif self.ghn.space != self.space:
            raise InputError(f"the GHN is configured for the {self.ghn.space!r} space but trains on {self.space!r}; "
                             f"build it with GHNConfig(space={self.space!r}, ...)")

    def build_model(self) -> GraphHyperNetwork | OneShotModel:
        if self.model == "ghn":
            return GraphHyperNetwork(self.ghn)
        if self.model == "oneshot":
            return OneShotModel(OneShotConfig(self.space, self.num_nodes, self.num_blocks,
                                              self.channels or OneShotConfig.channels, self.cells_per_stage))
        raise InputError(f"unknown model {self.model!r}; choose ghn or oneshot")

    def sampler(self, num_nodes: Optional[int] = None, evaluation: bool = False):
        """Training architectures (the space's training draw: anytime networks have random node counts per
        block, appendix 7.2; nb201 cells weighted edge ops) unless `evaluation` asks for the networks a
        search ranks."""
        return get_space(self.space).sampler(training=not evaluation,
                                             op_weights=None if evaluation else self.op_weights,
                                             **self.skeleton(num_nodes=num_nodes))

    def skeleton(self, **changed: Any) -> dict[str, Any]:
        """The network settings of the training architectures (those `changed` gives replaced)."""
        return {"num_nodes": self.num_nodes, "num_blocks": self.num_blocks, "channels": self.channels,
                "cells_per_stage": self.cells_per_stage, **{k: v for k, v in changed.items() if v is not None}}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        """The config `asdict` saved. Checkpoints before GHNConfig was nested there saved only the GHN
        fields set by hand; the rest took GHNConfig's defaults of the time (a 32-channel tile)."""
        kw = {f.name: d[f.name] for f in fields(cls) if f.name in d}
        if kw.get("op_weights", UNIFORM) is None:  # saved uniform: not the space's default weights
            kw["op_weights"] = UNIFORM
        space = kw.get("space", cls.space)
        ghn = {k: v for k, v in (kw.pop("ghn", None) or {}).items() if k != "space"}
        return cls(**kw, ghn=GHNConfig.from_dict({**ghn, "space": space}, legacy={"tile_channels": 32}))


def step_architectures(cfg: TrainConfig, step: int, sampler=None, rank: int = 0, world: int = 1):
    """Rank `rank`'s architectures of training step `step`: a function of (seed, step, rank, world)
    only. The ranks share one stream, so rank 0 of any world trains what a single process would."""
    rng = random.Random(f"train:{cfg.seed}:{step}")
    sampler = sampler or cfg.sampler()
    archs = [sampler(rng) for _ in range(cfg.archs_per_step * (rank + 1))]
    return archs[rank * cfg.archs_per_step:]


def exits_loss(logits: torch.Tensor | list[torch.Tensor], y: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Cross-entropy averaged over a network's classifiers (every exit of an anytime network) and the
    number of images its last classifier gets right."""
    outs = logits if isinstance(logits, list) else [logits]
    loss = torch.stack([F.cross_entropy(o, y) for o in outs]).mean()
    return loss, int((outs[-1].argmax(1) == y).sum())


def lr_milestones(steps: int) -> list[int]:
    """Where Adam's lr is halved: at 50% and 75% of the run (paper: epochs 100 and 150 of 200)."""
    return [steps // 2, (3 * steps) // 4]


def lr_schedule(optimizer, steps: int):
    return torch.optim.lr_scheduler.MultiStepLR(optimizer, lr_milestones(steps), gamma=0.5)


def retarget_lr_schedule(scheduler, steps: int) -> None:
    """Move a resumed schedule's milestones to a run of `steps` (--steps may change on resume) and set
    the lr the longer or shorter run has at the step reached; the loaded state keeps the old ones."""
    scheduler.milestones = Counter(lr_milestones(steps))
    halvings = sum(scheduler.last_epoch >= m for m in lr_milestones(steps))
    for group, base in zip(scheduler.optimizer.param_groups, scheduler.base_lrs):
        group["lr"] = base * scheduler.gamma ** halvings


class Trainer:
    """Owns the GHN, optimiser, data and output folder of one training run (of this rank's share of
    it under torchrun: `ctx` from ghn_ext.core.distributed.init_distributed)."""

    def __init__(self, cfg: TrainConfig, out_dir: str | Path, ctx: Optional[DistContext] = None):
        self.cfg = cfg
        self.ctx = ctx or DistContext()
        self.out = Path(out_dir)
        self.checkpoint_path = self.out / "checkpoint.pt"
        self.log_path = self.out / "train_log.jsonl"
        torch.manual_seed(cfg.seed)
        # the GHN, or the one-shot model when cfg.model says so; `model` is what the steps call (DDP's
        # wrapper under torchrun), `ghn` the module itself (checkpoints, validation)
        self.ghn = cfg.build_model().to(self.ctx.device)
        if isinstance(self.ghn, GraphHyperNetwork):  # it will score where it was trained, as its space says
            self.ghn.scoring = ScoringConfig.for_space(cfg.space, asdict(cfg))
        self.model = wrap_ddp(self.ghn, self.ctx)
        self.optimizer = torch.optim.Adam(self.ghn.parameters(), lr=cfg.lr)
        self.scheduler = lr_schedule(self.optimizer, cfg.steps)
        # Polyak averaging over the last ~1/(1 - ema) steps, against the noise of training on one random
        # architecture per step (bench/RESULTS.md: it does not change how a GHN ranks architectures)
        self.averaged = (AveragedModel(self.ghn, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema), use_buffers=True)
                         if cfg.ema > 0 else None)
        splits = cifar10_splits(cfg.data_dir)
        self.val = splits.val.head(cfg.eval_images)
        self.loader = TensorLoader(splits.train.images, splits.train.labels, cfg.batch_size,
                                   shuffle=True, augment=cfg.augment, drop_last=True, seed=cfg.seed,
                                   device=self.ctx.device, shard=(self.ctx.rank, self.ctx.world_size))
        self.sampler = cfg.sampler()
        self.step = 0

    # ------------------------------------------------------------------ checkpoints
    def state(self) -> dict[str, Any]:
        return {"format": TRAIN_STATE_FORMAT, "config": asdict(self.cfg), "step": self.step,
                "ghn": self.ghn.state_dict(), "ghn_config": asdict(self.ghn.config),
                "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "loader": self.loader.state_dict(), "world_size": self.ctx.world_size,
                **({"averaged": self.averaged.state_dict()} if self.averaged else {})}

    @property
    def final_model(self) -> GraphHyperNetwork | OneShotModel:
        """What the run hands on (validated, saved as ghn.pt / oneshot.pt): the averaged parameters
        when cfg.ema asks for them, else the last step's."""
        return self.averaged.module if self.averaged else self.ghn

    def save_checkpoint(self) -> None:
        if self.ctx.is_main:
            save_state(self.state(), self.checkpoint_path)

    def resume(self) -> bool:
        """Continue from out_dir/checkpoint.pt when it exists; False when starting fresh."""
        state = resume_state(self.checkpoint_path, TRAIN_STATE_FORMAT, "training")
        if state is None:
            return False
        with resuming_from(self.checkpoint_path):
            saved = TrainConfig.from_dict(state["config"])
            if saved.space != self.cfg.space:
                raise CheckpointError(f"it trains the {saved.space!r} space, not {self.cfg.space!r}")
            differs = {k for k, v in _flat_settings(saved).items()
                       if k not in RESUMABLE_CHANGES and _flat_settings(self.cfg)[k] != v}
            if differs:
                raise CheckpointError(f"it was started with other settings ({', '.join(sorted(differs))}); "
                                      "use another output folder or the same settings")
            self.ghn.load_state_dict(state["ghn"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            retarget_lr_schedule(self.scheduler, self.cfg.steps)
            if self.averaged:
                self.averaged.load_state_dict(state["averaged"])
            self.loader.load_state_dict(state["loader"], rescale=True)  # it may have had other ranks
            self.step = int(state["step"])
        if self.ctx.is_main:
            truncate_log(self.log_path, self.step)
        return True

    # ------------------------------------------------------------------ training
    def train_step(self) -> dict[str, float]:
        archs = step_architectures(self.cfg, self.step, self.sampler, self.ctx.rank, self.ctx.world_size)
        x, y = self.loader.next_batch()
        weights = self.model(archs)
        losses, correct = [], 0
        for g, w in zip(archs, weights):
            loss, right = exits_loss(run_network(g, x, w), y)
            losses.append(loss)
            correct += right
        loss = torch.stack(losses).mean()
        # summed over the ranks before any rank steps, so that all of them stop together on a NaN
        loss_sum, correct_sum = all_sum([loss.item(), correct], self.ctx)
        if not math.isfinite(loss_sum):
            raise NonFiniteLossError(
                f"step {self.step}: loss is {loss.item()} on rank {self.ctx.rank} for architectures "
                f"{[g.stable_hash() for g in archs]}; stopped without applying it "
                + (f"(last checkpoint: {self.checkpoint_path})" if self.checkpoint_path.exists()
                   else "(no checkpoint written yet)"))
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.ghn.parameters(), self.cfg.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        if self.averaged:
            self.averaged.update_parameters(self.ghn)
        world = self.ctx.world_size
        return {"loss": loss_sum / world, "acc": correct_sum / (len(y) * len(archs) * world)}

    def validate(self) -> float:
        """Mean validation accuracy (an anytime network's: its last exit's) of generated weights on unseen
        architectures of the space's validation draw (N=17 in the classification space, full blocks in
        the anytime space; a one-shot model only holds its training ones), drawn from a generator no training step uses.
        Under torchrun the architectures are dealt to the ranks and every rank gets the mean."""
        rng = random.Random(f"validate:{self.cfg.seed}")
        spec = get_space(self.cfg.space)
        sampler = (spec.validation_sampler(**self.cfg.skeleton()) if self.cfg.model == "ghn"
                   else self.cfg.sampler(evaluation=True))
        archs = deal([sampler(rng) for _ in range(self.cfg.eval_archs)], self.ctx)
        model = self.final_model
        model.eval()
        scores = gather_lists(score_architectures(model, archs, self.val) if archs else [], self.ctx)
        model.train()
        return sum(scores) / len(scores)

    def run(self, stop_after: Optional[int] = None, progress: bool = True) -> dict[str, Any]:
        """Train until cfg.steps (or `stop_after` more steps in this call, as if killed there)."""
        self.out.mkdir(parents=True, exist_ok=True)
        end = self.cfg.steps if stop_after is None else min(self.cfg.steps, self.step + stop_after)
        main = self.ctx.is_main  # the one rank that logs and saves
        bar = progress_bar(total=self.cfg.steps, initial=self.step, desc=f"train {self.cfg.space}",
                           disable=not (progress and main))
        ema = None
        trained = self.step < end
        if main:
            truncate_log(self.log_path, self.step)  # lines of a restarted run, or past the checkpoint
        with bar, (self.log_path.open("a") if main else contextlib.nullcontext()) as log:
            while self.step < end:
                t0 = time.perf_counter()
                lr = self.optimizer.param_groups[0]["lr"]  # the lr this step trains with
                stats = self.train_step()
                self.step += 1
                record = {"step": self.step - 1, **stats, "lr": lr,
                          "seconds": round(time.perf_counter() - t0, 4)}
                last = self.step == self.cfg.steps
                if last or (self.cfg.eval_every and self.step % self.cfg.eval_every == 0):
                    record["val_acc"] = self.validate()
                if main:
                    log.write(json.dumps(record) + "\n")
                    log.flush()
                ema = stats["acc"] if ema is None else 0.95 * ema + 0.05 * stats["acc"]
                bar.set_postfix(loss=f"{stats['loss']:.3f}", acc=f"{ema:.3f}",
                                **({"val_acc": f"{record['val_acc']:.3f}"} if "val_acc" in record else {}))
                bar.update(1)
                if last or self.step % self.cfg.checkpoint_every == 0:
                    self.save_checkpoint()
                if main and self.cfg.snapshot_every and self.step % self.cfg.snapshot_every == 0:
                    self.final_model.save(self.out / f"{self.cfg.model}_step{self.step:07d}.pt",
                                          extra={"train_config": asdict(self.cfg), "step": self.step})
        final = self.out / f"{self.cfg.model}.pt"
        if main and self.step == self.cfg.steps and (trained or not final.exists()):
            self.final_model.save(final, extra={"train_config": asdict(self.cfg)})
        return {"step": self.step, "done": self.step == self.cfg.steps}


def train(out_dir: str | Path, config: TrainConfig | str = "classification", *, resume: bool = True,
          progress: bool = True, **settings: Any) -> GraphHyperNetwork | OneShotModel:
    """Train a GHN (or with model="oneshot" the one-shot baseline) in `out_dir`, as `ghn train` does, and
    return it; a run already in `out_dir` resumes (`resume=False` starts afresh). `config` is a
    TrainConfig, or a space's name whose recipe `settings` (TrainConfig's fields) change:

        ghn = ghn_ext.train("runs/nb201", "nb201")                  # ghn train --space nb201 --out runs/nb201
        ghn = ghn_ext.train("runs/small", "nb201", steps=2000, seed=1)

    Writes checkpoint.pt (every checkpoint_every steps), train_log.jsonl and ghn.pt (oneshot.pt), which
    records the skeleton and signal the GHN scores with."""
    if isinstance(config, str):
        config = TrainConfig(space=config, **settings)
    elif settings:
        config = replace(config, **settings)
    trainer = Trainer(config, out_dir)
    if resume:
        trainer.resume()
    trainer.run(progress=progress)
    return trainer.final_model


__all__ = ["TrainConfig", "Trainer", "NonFiniteLossError", "train", "read_log", "step_architectures", "training_seconds"]
