"""`ghn train`: a GHN (or the one-shot baseline) on random architectures."""
from __future__ import annotations

import argparse
from pathlib import Path

from ghn_ext.cli.common import not_anytime, run_training, space_args
from ghn_ext.cli.types import fraction, learning_rate, nonnegative_int, op_weights, positive_int
from ghn_ext.core.distributed import add_device_argument
from ghn_ext.models.ghn import GHNConfig
from ghn_ext.spaces import classification
from ghn_ext.workflows.train import TrainConfig, Trainer


def _train_config(a: argparse.Namespace) -> TrainConfig:
    from ghn_ext.workflows.train import SPACE_TRAIN_DEFAULTS
    defaults = {"cells_per_stage": 5, "steps": 1000, "block_channels": GHNConfig.block_channels,
                "hidden": GHNConfig.hidden, "message_hidden": GHNConfig.message_hidden,
                "hyper_hidden": GHNConfig.hyper_hidden, "snapshot_every": 0, **SPACE_TRAIN_DEFAULTS.get(a.space, {})}
    for key, value in defaults.items():  # flags left unset take the space's defaults
        if getattr(a, key) is None:
            setattr(a, key, value)
    if a.op_weights == "uniform":
        a.op_weights = None
    ghn = GHNConfig(space=a.space, T=a.T, scheme=a.scheme, share_params=not a.no_share,
                    pass_embedding=not a.no_pass, naive_hypernet=a.naive, block_channels=a.block_channels,
                    hidden=a.hidden, message_hidden=a.message_hidden, hyper_hidden=a.hyper_hidden)
    return TrainConfig(space=a.space, steps=a.steps, batch_size=a.batch_size, archs_per_step=a.archs_per_step,
                       lr=a.lr, ema=a.ema, num_nodes=a.num_nodes, num_blocks=a.num_blocks, channels=a.channels,
                       cells_per_stage=a.cells_per_stage, op_weights=a.op_weights, seed=a.seed, eval_every=a.eval_every,
                       eval_archs=a.eval_archs, eval_images=a.eval_images,
                       checkpoint_every=a.checkpoint_every, snapshot_every=a.snapshot_every,
                       data_dir=a.data_dir, ghn=ghn, model=a.model)


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
    space_args(p, classification.TRAIN_NODES)
    p.set_defaults(cells_per_stage=None)  # per space: ghn_ext.workflows.train.SPACE_TRAIN_DEFAULTS
    p.add_argument("--model", choices=("ghn", "oneshot"), default="ghn",
                   help="oneshot: the weight-sharing baseline, trained the same way (use --num-nodes 17)")
    training_args(p)


def training_args(p: argparse.ArgumentParser) -> None:
    """The options of a GHN training run, `ghn train`'s and `ghn anytime train`'s."""
    p.add_argument("--out", required=True, help="run folder: checkpoint, log, ghn.pt (oneshot.pt)")
    p.add_argument("--steps", type=positive_int, default=None,
                   help="training steps (default 1000; nb201: 20000, with 1 cell per stage and 16 channels)")
    p.add_argument("--batch-size", type=positive_int, default=64, help="images per training step")
    p.add_argument("--archs-per-step", type=positive_int, default=1,
                   help="random architectures per step, each run on the whole batch, their losses averaged")
    p.add_argument("--lr", type=learning_rate, default=1e-3, help="Adam learning rate (halved at 50%% and 75%% of the steps)")
    p.add_argument("--ema", type=fraction, default=0.0,
                   help="keep an exponential moving average of the parameters with this decay (e.g. 0.998) "
                        "and save it instead of the last step's; 0: off")
    p.add_argument("--op-weights", type=op_weights, default=None, metavar="OP=W,...",
                   help="nb201: relative weights of the edge ops in training cells (ops left out: 0), or "
                   "'uniform'; default nor_conv_3x3=7,nor_conv_1x1=7,skip_connect=2,avg_pool_3x3=2,none=2")
    p.add_argument("--T", type=positive_int, default=5, help="propagation passes")
    p.add_argument("--scheme", choices=("fb", "sync"), default="fb",
                   help="propagation: forward-backward through the graph (paper) or synchronous")
    p.add_argument("--no-share", action="store_true", help="separate GNN parameters per block")
    p.add_argument("--no-pass", action="store_true", help="do not pass block embeddings on")
    p.add_argument("--naive", action="store_true", help="one hypernet output branch per op type")
    p.add_argument("--block-channels", type=positive_int, default=None,
                   help="output and input channels of the weight block the GHN emits per node (default 32; "
                        "nb201: 64)")
    p.add_argument("--hidden", type=positive_int, default=None,
                   help=f"node embedding and GRU size (default {GHNConfig.hidden}, the paper's)")
    p.add_argument("--message-hidden", type=positive_int, default=None,
                   help=f"hidden size of the message MLP (default {GHNConfig.message_hidden}, the paper's)")
    p.add_argument("--hyper-hidden", type=positive_int, default=None,
                   help=f"hidden size of the MLP that emits the weights (default {GHNConfig.hyper_hidden}, the paper's)")
    p.add_argument("--eval-every", type=nonnegative_int, default=0,
                   help="steps between validation checks on unseen architectures (0: at the end only)")
    p.add_argument("--eval-archs", type=positive_int, default=8, help="unseen architectures per validation check")
    p.add_argument("--eval-images", type=positive_int, default=500, help="validation images per check")
    p.add_argument("--checkpoint-every", type=positive_int, default=50, help="steps between checkpoints")
    p.add_argument("--snapshot-every", type=nonnegative_int, default=None, metavar="K",
                   help="also keep the model every K steps as OUT/<model>_step<K>.pt (0: never; default "
                   "0, nb201: 3000)")
    p.add_argument("--restart", action="store_true", help="ignore an existing checkpoint in OUT")
    add_device_argument(p)
    p.set_defaults(func=cmd_train, holds="out")
