"""What several verbs share: the options every verb declares the same way, the space and skeleton options
(their defaults and help read from the space specs), the GHN a scoring verb loads, a training run."""
from __future__ import annotations

import argparse
import sys
from typing import Any, Callable

from ghn_ext.cli.types import positive_int, seed
from ghn_ext.core.checks import InputError
from ghn_ext.core.distributed import DistContext, distributed_run
from ghn_ext.spaces import SPACES, get_space

SHARED_OPTIONS: dict[str, tuple[tuple[str, ...], dict[str, Any]]] = {
    "data_dir": (("--data-dir",), dict(default=None, help="CIFAR-10 folder (default: $GHN_DATA_DIR, else "
                                                          "~/.cache/ghn_ext/cifar10)")),
    "quiet": (("--quiet",), dict(action="store_true", help="no progress bars")),
    "seed": (("--seed",), dict(type=seed, default=0, help="seed of every random draw (architectures, weights, images)")),
}

SKELETON_HELP = {"num_nodes": "nodes per cell", "num_blocks": "cells of a network",
                 "channels": "initial width", "cells_per_stage": "cells per stage"}


def shared_args(p: argparse.ArgumentParser, *names: str, **defaults: Any) -> None:
    """Add the options `names` (keys of SHARED_OPTIONS) as every verb has them; `defaults` changes a default."""
    for name in names:
        flags, kwargs = SHARED_OPTIONS[name]
        p.add_argument(*flags, **{**kwargs, **({"default": defaults[name]} if name in defaults else {})})


def per_space(values: dict[str, Any]) -> str:
    """'classification 32, nb201 16': a setting's default in each space that has one."""
    return ", ".join(f"{space} {value}" for space, value in values.items())


def space_args(p: argparse.ArgumentParser, training: bool = False, spaces: tuple[str, ...] = SPACES,
               note: str = "", defaults: dict[str, int] | None = None) -> None:
    """--space and the skeleton settings, each left unset (None) to mean the space's default: a training
    run's recipe with `training`, else the skeleton the GHN scores in (`note` says so); `defaults` gives
    settings a default of the verb's own instead."""
    p.add_argument("--space", choices=spaces, default="classification", help="search space")
    for key, what in SKELETON_HELP.items():
        if defaults and key in defaults:
            p.add_argument("--" + key.replace("_", "-"), type=positive_int, default=defaults[key], help=what)
            continue
        values = {}
        for name in spaces:
            spec = get_space(name)
            if key in spec.skeleton_defaults:
                values[name] = (spec.train_defaults.get(key, spec.skeleton_defaults[key]) if training
                                else spec.skeleton_defaults[key])
        if values:
            p.add_argument("--" + key.replace("_", "-"), type=positive_int, default=None,
                           help=f"{what} (default: {per_space(values)}{note})")


def skeleton_of(a: argparse.Namespace) -> dict[str, Any]:
    """The skeleton settings given on the command line (None: left to the space or the GHN)."""
    return {key: getattr(a, key, None) for key in SKELETON_HELP}


def not_anytime(a: argparse.Namespace, instead: str) -> None:
    """These verbs rank or train by one accuracy; anytime networks are judged by their exits' curve."""
    if get_space(a.space).anytime:
        raise InputError(f"`ghn {a.command}` does not handle anytime networks; use `ghn anytime {instead}`")


def ghn_for(a: argparse.Namespace):
    """The GHN of `--ckpt` (a file, or the name of a GHN shipped with the package), or without it the
    space's shipped GHN (said on stdout)."""
    from ghn_ext.workflows.score import load_ghn
    ghn = load_ghn(a.ckpt, a.space)
    if a.ckpt is None:
        print(f"using the pretrained {a.space} GHN shipped with ghn_ext (--ckpt {a.space})", flush=True)
    return ghn


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


class DeprecatedAlias(argparse.Action):
    """An old spelling of an option: it still works, and says which to use instead."""

    def __init__(self, option_strings, dest, instead: str = "", **kwargs):
        self.instead = instead
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        print(f"ghn: {option_string} is deprecated; use {self.instead}", file=sys.stderr)
        setattr(namespace, self.dest, values)
