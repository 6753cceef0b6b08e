"""`ghn anytime train|search|train-final`: the anytime experiment (paper Sec. 5.2) from the command line.

    ghn anytime train --out runs/anytime                       # GHN on random-size anytime networks
    ghn anytime search --ckpt runs/anytime/ghn.pt --out runs/anytime/search
    ghn anytime train-final --ranking runs/anytime/search/ranking.json --out runs/anytime/final

The search ranks random full-size networks by the area under their predicted accuracy-FLOPs curve over
a stated FLOPs range (default: zero to the MSDNet-style baseline's total FLOPs); train-final trains the
winner at the width that matches the baseline's FLOPs, and the baseline, with the same recipe, and
plots both curves (paper Fig. 3). The work is ghn_ext.workflows.anytime's (run_anytime_search and
train_final_anytime, with their configs): this module parses the options into those configs and prints.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from ghn_ext.cli import train as train_cli
from ghn_ext.cli.common import shared_args
from ghn_ext.cli.types import learning_rate, nonnegative_int, positive_int
from ghn_ext.core.distributed import add_device_argument, distributed_run
from ghn_ext.models.ghn import GraphHyperNetwork
from ghn_ext.spaces import anytime
from ghn_ext.workflows.anytime import (
    AnytimeFinalConfig,
    AnytimeSearchConfig,
    AnytimeTrainConfig,
    run_anytime_search,
    train_final_anytime,
)
from ghn_ext.workflows.train import TrainConfig


def _flops_range(text: str) -> tuple[float, float]:
    try:
        lo, hi = (float(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected LO,HI in FLOPs, e.g. 0,5e7; got {text!r}") from None
    return lo, hi


def _baseline_options(a: argparse.Namespace) -> dict:
    return {"channels": a.channels, "baseline_layers": a.baseline_layers,
            "baseline_exit_every": a.baseline_exit_every, "flops_range": a.flops_range, "data_dir": a.data_dir}


def _search_config(a: argparse.Namespace) -> AnytimeSearchConfig:
    return AnytimeSearchConfig(num_archs=a.num_archs, val_images=a.val_images, archs_per_batch=a.archs_per_batch,
                               seed=a.seed, **_baseline_options(a))


def _final_config(a: argparse.Namespace) -> AnytimeFinalConfig:
    training = AnytimeTrainConfig(epochs=a.epochs, batch_size=a.batch_size, lr=a.lr, train_images=a.train_images,
                                  seed=a.seed)
    return AnytimeFinalConfig(rank=a.rank, test_images=a.test_images, training=training, **_baseline_options(a))


def cmd_search(a: argparse.Namespace) -> int:
    cfg = _search_config(a)
    with distributed_run(a.device) as ctx:
        ghn = GraphHyperNetwork.load(a.ckpt, space=anytime.SPACE.name).to(ctx.device)
        ranking = run_anytime_search(ghn, a.out, cfg, progress=not a.quiet, ctx=ctx)
    if not ctx.is_main:
        return 0
    lo, hi = cfg.area_range()
    print(f"area over [{lo:.3g}, {hi:.3g}] FLOPs; top {min(a.show_top, len(ranking))}:")
    for r, rec in enumerate(ranking[:a.show_top], 1):
        print(f"{r:>4}  area {rec['area']:.4f}  last exit {rec['exit_acc'][-1]:.4f} at "
              f"{rec['exit_flops'][-1] / 1e6:.1f} MFLOPs  {rec['hash']}")
    print(f"ranking written to {Path(a.out) / 'ranking.json'}")
    return 0


def cmd_train_final(a: argparse.Namespace) -> int:
    def trained(name: str, res: dict) -> None:
        print(f"{name}: area {res['area']:.4f}, exits " +
              ", ".join(f"{acc:.3f}@{f / 1e6:.1f}M" for f, acc in zip(res["exit_flops"], res["exit_acc"])))

    train_final_anytime(a.ranking, a.out, _final_config(a), progress=not a.quiet, on_trained=trained)
    out = Path(a.out)
    print(f"results in {out / 'result.json'}, plot {out / 'curves.png'}")
    return 0


def add_arguments(verb: str, p: argparse.ArgumentParser) -> None:
    """`ghn anytime`'s three sub-verbs; its training is `ghn train`'s on the anytime space."""
    verbs = p.add_subparsers(dest="anytime_command", required=True, metavar="{train,search,train-final}")

    def common(q, channels_help, channels, seed_default):
        q.add_argument("--channels", type=positive_int, default=channels, help=channels_help)
        shared_args(q, "data_dir", "seed", "quiet", seed=seed_default)

    def baseline_args(q, cfg):
        q.add_argument("--baseline-layers", type=positive_int, default=cfg.baseline_layers)
        q.add_argument("--baseline-exit-every", type=positive_int, default=cfg.baseline_exit_every)
        q.add_argument("--flops-range", type=_flops_range, default=cfg.flops_range,
                       help="LO,HI FLOPs the area is taken over (default: 0 to the baseline's total)")

    q = verbs.add_parser("train", help="train a GHN on random anytime networks (random node counts per block)")
    common(q, "base width of the training networks", anytime.CHANNELS, TrainConfig.seed)
    train_cli.training_args(q)
    q.set_defaults(space=anytime.SPACE.name, model="ghn", num_nodes=TrainConfig.num_nodes, num_blocks=TrainConfig.num_blocks,
                   cells_per_stage=None)

    q = verbs.add_parser("search", help="rank random anytime networks by their predicted area")
    search = AnytimeSearchConfig()
    common(q, "base width of the candidates and of the baseline that sets the default range", search.channels,
           search.seed)
    baseline_args(q, search)
    q.add_argument("--ckpt", required=True, help="GHN file (ghn.pt from `ghn anytime train`)")
    q.add_argument("--out", required=True, help="folder for ranking.json")
    q.add_argument("--num-archs", type=positive_int, default=search.num_archs)
    q.add_argument("--archs-per-batch", type=positive_int, default=search.archs_per_batch)
    q.add_argument("--val-images", type=positive_int, default=search.val_images)
    q.add_argument("--show-top", type=positive_int, default=10)
    add_device_argument(q)
    q.set_defaults(func=cmd_search, holds="out")

    q = verbs.add_parser("train-final", help="train the chosen network at the baseline's FLOPs, and the "
                         "baseline, with the same recipe; curves and areas")
    final = AnytimeFinalConfig()
    common(q, "base width of the MSDNet-style baseline", final.channels, final.training.seed)
    baseline_args(q, final)
    q.add_argument("--ranking", required=True, help="ranking.json of `ghn anytime search`")
    q.add_argument("--rank", type=nonnegative_int, default=final.rank,
                   help="which architecture of the ranking (0: the best)")
    q.add_argument("--out", required=True, help="folder: checkpoints (a rerun resumes), result.json, curves.png")
    q.add_argument("--epochs", type=positive_int, default=final.training.epochs)
    q.add_argument("--batch-size", type=positive_int, default=final.training.batch_size)
    q.add_argument("--lr", type=learning_rate, default=final.training.lr)
    q.add_argument("--train-images", type=positive_int, default=final.training.train_images,
                   help="first images of the training split (all)")
    q.add_argument("--test-images", type=positive_int, default=final.test_images,
                   help="first images of the test split (all)")
    q.set_defaults(func=cmd_train_final, holds="out")
