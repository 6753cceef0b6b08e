"""`ghn train-final`: a chosen architecture trained to the end."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from ghn_ext.cli.common import not_anytime, run_training, shared_args, skeleton_of, space_args
from ghn_ext.cli.types import fraction, learning_rate, nonnegative_int, nonnegative_real, positive_int
from ghn_ext.core.distributed import add_device_argument
from ghn_ext.spaces.reading import read_architectures
from ghn_ext.workflows.final import FinalConfig
from ghn_ext.core.checks import InputError


def cmd_train_final(a: argparse.Namespace) -> int:
    not_anytime(a, "train-final")
    from ghn_ext.workflows.final import FinalTrainer
    from ghn_ext.workflows.search import SearchConfig, arch_from_record

    if bool(a.arch) == bool(a.ranking):
        raise InputError("give exactly one of --arch (a file of architectures) and --ranking (ranking.json)")
    if a.arch:
        candidates = read_architectures(a.arch, a.space, **skeleton_of(a))
    else:
        path = Path(a.ranking)
        if not path.is_file():
            raise FileNotFoundError(f"ranking file {path} does not exist")
        try:
            candidates = json.loads(path.read_text())["ranking"]
        except (json.JSONDecodeError, KeyError, TypeError):
            raise InputError(f"{path} is not a ranking.json of `ghn search`") from None
    if not 0 <= a.rank < len(candidates):
        raise InputError(f"--rank {a.rank} is out of range: {len(candidates)} architectures")
    graph = candidates[a.rank]
    if a.ranking:
        graph = arch_from_record(graph, a.space, SearchConfig(**skeleton_of(a)))
    cfg = FinalConfig(epochs=a.epochs, batch_size=a.batch_size, lr=a.lr, drop_path=a.drop_path,
                      aux_weight=a.aux_weight, cutout=a.cutout, train_images=a.train_images,
                      val_images=a.val_images, seed=a.seed, checkpoint_every=a.checkpoint_every,
                      warmup_epochs=a.warmup_epochs)
    ctx, result = run_training(lambda ctx: FinalTrainer(graph, cfg, a.out, a.data_dir, ctx), a)
    if ctx.is_main:
        print(f"{graph.stable_hash()}: validation accuracy {result['val_acc']:.4f}, test accuracy "
              f"{result['test_acc']:.4f}; results in {Path(a.out) / 'result.json'}")
    return 0


def add_arguments(verb: str, p: argparse.ArgumentParser) -> None:
    space_args(p)
    shared_args(p, "data_dir", "seed", "quiet")
    p.add_argument("--arch", help="file of architectures, one per line (see `ghn score`)")
    p.add_argument("--ranking", help="ranking.json of `ghn search`")
    p.add_argument("--rank", type=nonnegative_int, default=0, help="which line / rank to train (0: the first / best)")
    p.add_argument("--out", required=True, help="run folder: checkpoint, log, final.pt, result.json")
    p.add_argument("--epochs", type=positive_int, default=FinalConfig.epochs)
    p.add_argument("--batch-size", type=positive_int, default=FinalConfig.batch_size)
    p.add_argument("--lr", type=learning_rate, default=FinalConfig.lr)
    p.add_argument("--drop-path", type=fraction, default=FinalConfig.drop_path)
    p.add_argument("--aux-weight", type=nonnegative_real, default=FinalConfig.aux_weight)
    p.add_argument("--cutout", type=nonnegative_int, default=FinalConfig.cutout)
    p.add_argument("--train-images", type=positive_int, default=None, help="first images of the training split (all)")
    p.add_argument("--val-images", type=positive_int, default=FinalConfig.val_images)
    p.add_argument("--checkpoint-every", type=positive_int, default=FinalConfig.checkpoint_every)
    p.add_argument("--warmup-epochs", type=nonnegative_real, default=FinalConfig.warmup_epochs,
                   help="linear warmup of the lr (scaled by the number of ranks) under torchrun")
    add_device_argument(p)
    p.set_defaults(func=cmd_train_final, holds="out")


