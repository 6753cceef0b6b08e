"""`ghn train`: a GHN (or the one-shot baseline) on random architectures, with the space's recipe for
every option left unset (ghn_ext.spaces.spec.SearchSpace.train_defaults: what TrainConfig(space=...) trains)."""
from __future__ import annotations

import argparse
from pathlib import Path

from ghn_ext.cli.common import DeprecatedAlias, not_anytime, per_space, run_training, shared_args, skeleton_of, space_args
from ghn_ext.cli.types import fraction, learning_rate, nonnegative_int, op_weights, positive_int
from ghn_ext.core.distributed import add_device_argument
from ghn_ext.models.ghn import SPACE_SETTINGS as GHN_SPACE_SETTINGS, GHNConfig
from ghn_ext.spaces import SPACES, get_space
from ghn_ext.workflows.train import SPACE_SETTINGS, TrainConfig, Trainer

GHN_OPTIONS = ("T", "tile_channels", "hidden", "message_hidden", "hyper_hidden")


def _train_config(a: argparse.Namespace) -> TrainConfig:
    """The TrainConfig of the flags: those left unset are left to TrainConfig and GHNConfig (the space's)."""
    def given(names):
        return {k: getattr(a, k) for k in names if getattr(a, k) is not None}

    ghn = GHNConfig(space=a.space, scheme=a.scheme, share_params=not a.no_share, pass_embedding=not a.no_pass,
                    naive_hypernet=a.naive, **given(GHN_OPTIONS))
    return TrainConfig(space=a.space, batch_size=a.batch_size, archs_per_step=a.archs_per_step, lr=a.lr, ema=a.ema,
                       seed=a.seed, eval_every=a.eval_every, eval_archs=a.eval_archs, eval_images=a.eval_images,
                       checkpoint_every=a.checkpoint_every, data_dir=a.data_dir, ghn=ghn, model=a.model,
                       **given(("steps", "snapshot_every", "op_weights", *skeleton_of(a))))


def cmd_train(a: argparse.Namespace) -> int:
    if a.command == "train":  # `ghn anytime train` runs this too, with the anytime space set
        not_anytime(a, "train")
    cfg = _train_config(a)
    ctx, result = run_training(lambda ctx: Trainer(cfg, a.out, ctx), a)
    if ctx.is_main:
        print(f"trained {result['step']} steps on {ctx.world_size} process(es); {a.model} saved to "
              f"{Path(a.out) / (a.model + '.pt')}")
    return 0


def add_arguments(verb: str, p: argparse.ArgumentParser) -> None:
    """`ghn train`: the space and network options, then the training ones."""
    space_args(p, training=True)
    shared_args(p, "data_dir", "seed", "quiet")
    p.add_argument("--model", choices=("ghn", "oneshot"), default="ghn",
                   help="oneshot: the weight-sharing baseline, trained the same way (use --num-nodes 17)")
    training_args(p)


def _recipe(name: str, generic: dict, attribute: str = "train_defaults") -> str:
    """'1000; nb201 20000': a setting's default and the spaces whose spec (`attribute`) sets it otherwise."""
    others = {s: getattr(get_space(s), attribute)[name] for s in SPACES if name in getattr(get_space(s), attribute)}
    return f"{generic[name]}" + (f"; {per_space(others)}" if others else "")


def training_args(p: argparse.ArgumentParser) -> None:
    """The options of a GHN training run, `ghn train`'s and `ghn anytime train`'s."""
    p.add_argument("--out", required=True, help="run folder: checkpoint, log, ghn.pt (oneshot.pt)")
    p.add_argument("--steps", type=positive_int, default=None,
                   help=f"training steps (default {_recipe('steps', SPACE_SETTINGS)})")
    p.add_argument("--batch-size", type=positive_int, default=TrainConfig.batch_size, help="images per training step")
    p.add_argument("--archs-per-step", type=positive_int, default=TrainConfig.archs_per_step,
                   help="random architectures per step, each run on the whole batch, their losses averaged")
    p.add_argument("--lr", type=learning_rate, default=TrainConfig.lr,
                   help="Adam learning rate (halved at 50%% and 75%% of the steps)")
    p.add_argument("--ema", type=fraction, default=TrainConfig.ema,
                   help="keep an exponential moving average of the parameters with this decay (e.g. 0.998) "
                        "and save it instead of the last step's; 0: off")
    weighted = {s: ",".join(f"{op}={w:g}" for op, w in get_space(s).train_defaults["op_weights"].items())
                for s in SPACES if "op_weights" in get_space(s).train_defaults}
    p.add_argument("--op-weights", type=op_weights, default=None, metavar="OP=W,...",
                   help="relative weights of the edge ops in training cells (ops left out: 0), or 'uniform' "
                   f"(default: {per_space(weighted)})")
    p.add_argument("--T", type=positive_int, default=GHNConfig.T, help="propagation passes")
    p.add_argument("--scheme", choices=("fb", "sync"), default=GHNConfig.scheme,
                   help="propagation: forward-backward through the graph (paper) or synchronous")
    p.add_argument("--no-share", action="store_true", help="separate GNN parameters per block")
    p.add_argument("--no-pass", action="store_true", help="do not pass block embeddings on")
    p.add_argument("--naive", action="store_true", help="one hypernet output branch per op type")
    tile_help = _recipe("tile_channels", GHN_SPACE_SETTINGS, "ghn_defaults")
    p.add_argument("--tile-channels", type=positive_int, default=None,
                   help=f"output and input channels of the weight tile the GHN emits per node (default {tile_help})")
    p.add_argument("--block-channels", dest="tile_channels", type=positive_int, action=DeprecatedAlias,
                   instead="--tile-channels", help="deprecated spelling of --tile-channels")
    p.add_argument("--hidden", type=positive_int, default=None,
                   help=f"node embedding and GRU size (default {GHNConfig.hidden}, the paper's)")
    p.add_argument("--message-hidden", type=positive_int, default=None,
                   help=f"hidden size of the message MLP (default {GHNConfig.message_hidden}, the paper's)")
    p.add_argument("--hyper-hidden", type=positive_int, default=None,
                   help=f"hidden size of the MLP that emits the weights (default {GHNConfig.hyper_hidden}, the paper's)")
    p.add_argument("--eval-every", type=nonnegative_int, default=TrainConfig.eval_every,
                   help="steps between validation checks on unseen architectures (0: at the end only)")
    p.add_argument("--eval-archs", type=positive_int, default=TrainConfig.eval_archs,
                   help="unseen architectures per validation check")
    p.add_argument("--eval-images", type=positive_int, default=TrainConfig.eval_images, help="validation images per check")
    p.add_argument("--checkpoint-every", type=positive_int, default=TrainConfig.checkpoint_every,
                   help="steps between checkpoints")
    p.add_argument("--snapshot-every", type=nonnegative_int, default=None, metavar="K",
                   help="also keep the model every K steps as OUT/<model>_step<K>.pt (0: never; default "
                   f"{_recipe('snapshot_every', SPACE_SETTINGS)})")
    p.add_argument("--restart", action="store_true", help="ignore an existing checkpoint in OUT")
    add_device_argument(p)
    p.set_defaults(func=cmd_train, holds="out")
