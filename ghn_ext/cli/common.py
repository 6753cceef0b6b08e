"""Helpers several verb groups share: the space options, the GHN a scoring verb loads, a training run."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Callable, Optional

from ghn_ext.core.distributed import DistContext, distributed_run
from ghn_ext.cli.types import positive_int, seed
from ghn_ext.core.checkpoints import CheckpointError, load_checkpoint
from ghn_ext.models.ghn import CHECKPOINT_FORMAT, GraphHyperNetwork
from ghn_ext.spaces import SPACES
from ghn_ext.core.checks import InputError


def space_args(p: argparse.ArgumentParser, num_nodes: int, num_blocks: int = 18) -> None:
    p.add_argument("--space", choices=SPACES, default="classification", help="search space")
    p.add_argument("--num-nodes", type=positive_int, default=num_nodes, help="nodes per cell (classification)")
    p.add_argument("--num-blocks", type=positive_int, default=num_blocks, help="cells of a classification network")
    p.add_argument("--channels", type=positive_int, default=None, help="initial width (32 classification, 16 nb201)")
    p.add_argument("--cells-per-stage", type=positive_int, default=5, help="NAS-Bench-201 cells per stage")
    p.add_argument("--data-dir", default=None, help="CIFAR-10 folder (default: $GHN_DATA_DIR)")
    p.add_argument("--seed", type=seed, default=0, help="seed of every random draw (architectures, weights, images)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def not_anytime(a: argparse.Namespace, instead: str) -> None:
    """These verbs rank or train by one accuracy; anytime networks are judged by their exits' curve."""
    if a.space == "anytime":
        raise InputError(f"`ghn {a.command}` does not handle anytime networks; use `ghn anytime {instead}`")


def load_scoring_ghn(a: argparse.Namespace) -> GraphHyperNetwork:
    """The GHN of `--ckpt` (a file, or the name of a GHN shipped with the package), or without it the
    space's shipped GHN. Sets a.channels and a.cells_per_stage where not given: for NAS-Bench-201 the
    skeleton the GHN was trained in, which is where it scores cells."""
    from ghn_ext.workflows.evaluate import DEFAULT_SIGNAL
    from ghn_ext.models.pretrained import manifest, resolve_checkpoint
    if a.ckpt is None:
        if a.space not in manifest():
            raise CheckpointError(f"no --ckpt given and no pretrained GHN ships for the {a.space!r} space; "
                                  "train one with `ghn train` and pass --ckpt")
        a.ckpt = a.space
        print(f"using the pretrained {a.space} GHN shipped with ghn_ext (--ckpt {a.space})", flush=True)
    path = resolve_checkpoint(a.ckpt)
    ghn = GraphHyperNetwork.load(path, space=a.space)
    a.signal = a.signal or DEFAULT_SIGNAL[a.space]
    if a.space == "nb201":
        a.channels, a.cells_per_stage = scoring_skeleton(path, a.channels, a.cells_per_stage)
    else:
        a.cells_per_stage = a.cells_per_stage or 5
    return ghn


def scoring_skeleton(checkpoint: str | Path, channels: Optional[int], cells_per_stage: Optional[int]
                     ) -> tuple[int, int]:
    """Where a NAS-Bench-201 GHN scores a cell: the skeleton it was trained in (its checkpoint's training
    settings; 16 channels and 5 cells per stage when they are not recorded), unless given."""
    trained = load_checkpoint(checkpoint, CHECKPOINT_FORMAT, what="GHN").get("train_config") or {}
    return (channels or trained.get("channels") or 16,
            cells_per_stage or trained.get("cells_per_stage") or 5)


def run_training(make_trainer: Callable[[DistContext], Any], a: argparse.Namespace) -> tuple[DistContext, dict]:
    """Run the trainer `make_trainer(ctx)` builds (GHN, anytime GHN or final training) in torchrun's process
    group when launched by it: resumed from a.out's checkpoint unless a.restart, its result returned."""
    with distributed_run(a.device) as ctx:
        trainer = make_trainer(ctx)
        if not getattr(a, "restart", False) and trainer.resume() and ctx.is_main:
            of = f" of {trainer.total_steps}" if hasattr(trainer, "total_steps") else ""
            print(f"resuming {a.out} at step {trainer.step}{of}")
        result = trainer.run(progress=not a.quiet)
    return ctx, result
