"""`ghn groundtruth`, `correlate`, `ablate`, `compare-top`: the correlation studies."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Optional

from ghn_ext.cli.common import DeprecatedAlias, not_anytime, shared_args, skeleton_of, space_args
from ghn_ext.cli.types import shard_argument, int_list, learning_rate, nonnegative_int, positive_int, seed
from ghn_ext.models.ghn import GHNConfig, GraphHyperNetwork
from ghn_ext.studies.ablation import STUDIES
from ghn_ext.studies.groundtruth import Protocol, run_groundtruth
from ghn_ext.workflows.train import TrainConfig
from ghn_ext.spaces import SPACES, classification, get_space
from ghn_ext.core.checks import InputError


def cmd_groundtruth(a: argparse.Namespace) -> int:
    not_anytime(a, "train-final")
    protocol = Protocol(space=a.space, num_nodes=a.num_nodes, num_blocks=a.num_blocks,
                        channels=a.channels, cells_per_stage=a.cells_per_stage,
                        train_images=a.train_images, epochs=a.epochs, batch_size=a.batch_size, lr=a.lr,
                        val_images=a.val_images, seed=a.seed, repeats=a.repeats)
    records = run_groundtruth(protocol, a.out, a.num_archs, a.data_dir, progress=not a.quiet, shard=a.shard)
    accs = [r["val_acc"] for r in records]
    timed = [r["train_seconds"] for r in records if "train_seconds" in r]  # a merged retraining has none
    print(f"{len(records)} architectures in {a.out}: validation accuracy {min(accs):.3f} .. {max(accs):.3f}"
          + (f", {sum(timed) / len(timed):.0f} s each (of {len(timed)} timed)" if timed else ""))
    return 0


def cmd_correlate(a: argparse.Namespace) -> int:
    from ghn_ext.core.data import cifar10_splits
    from ghn_ext.models.oneshot import OneShotModel
    from ghn_ext.studies.correlate import (
        correlate,
        finetuned_predictor,
        markdown_table,
        model_predictor,
        sgd_predictor,
    )
    from ghn_ext.studies.groundtruth import groundtruth_set

    if get_space(a.space).truth_table:
        return _correlate_nb201_table(a)
    if a.finetune_steps and not (a.ghn or a.oneshot):
        raise InputError("--finetune-steps trains the weights of a GHN or one-shot model: give --ghn or --oneshot")
    given = a.ghn or a.oneshot or a.sgd_steps
    if not (given or (Path(a.out) / "predictions.json").exists()):
        raise InputError("nothing to compare: give --ghn, --oneshot or --sgd-steps, or an --out folder whose "
                         "predictions.json holds scores (to tabulate them against this ground truth)")
    protocol, archs, records = groundtruth_set(a.groundtruth)
    if a.indices:
        archs, records = _select_indices(archs, records, *a.indices)
    if given:
        splits = cifar10_splits(a.data_dir)
        train, val = splits.train.head(protocol.train_images), splits.val.head(protocol.val_images)
    predictors, models = [], []
    for spec in a.ghn:
        name, _, path = spec.rpartition("=")
        models.append((name or "GHN", GraphHyperNetwork.load(path, protocol.space), path))
    if a.oneshot:
        name, _, path = a.oneshot.rpartition("=")
        models.append((name or "one-shot", OneShotModel.load(path), path))
    for name, model, path in models:
        predictors.append(model_predictor(name, model, val, path))
        predictors += [finetuned_predictor(name, model, k, protocol, train, val, path, a.batch_stats, a.sgd_seed)
                       for k in a.finetune_steps]
    predictors += [sgd_predictor(k, protocol, train, val, a.batch_stats, a.sgd_seed) for k in a.sgd_steps]
    rows = correlate(predictors, archs, records, a.out, progress=not a.quiet,
                     title=f"{len(records)} architectures{_indices_text(a.indices)}, ground truth: "
                     f"{protocol.steps} SGD steps"
                     + (f", mean of {protocol.repeats} runs" if protocol.repeats > 1 else ""))
    print(markdown_table(rows), end="")
    print(f"table and scatter plot in {a.out}")
    return 0


def _correlate_nb201_table(a: argparse.Namespace) -> int:
    """`ghn correlate --space nb201`: predictors against a CSV table of published accuracies."""
    from ghn_ext.workflows.score import load_ghn
    from ghn_ext.core.data import cifar10_splits
    from ghn_ext.studies.correlate_nb201 import (
        baseline_predictor,
        correlate_table,
        ghn_predictor,
    )
    from ghn_ext.studies.truth_table import read_truth_table
    from ghn_ext.models.pretrained import resolve_checkpoint

    unused = [flag for flag, value in (("--oneshot", a.oneshot), ("--sgd-steps", a.sgd_steps),
                                       ("--finetune-steps", a.finetune_steps), ("--indices", a.indices)) if value]
    if unused:
        raise InputError(f"{', '.join(unused)} apply to a ground truth of `ghn groundtruth`, not to a table of "
                         "NAS-Bench-201 accuracies")
    table = read_truth_table(a.groundtruth)
    if a.cells:
        table = table.head(a.cells)
    for column in a.column:
        table.column(column)  # a missing column is refused before any scoring
    splits = cifar10_splits(a.data_dir)
    predictors = []
    for spec in a.ghn:
        name, _, path = spec.rpartition("=")
        ghn = load_ghn(path, a.space)
        predictors.append(ghn_predictor(name or "GHN", ghn, resolve_checkpoint(path), splits.val.head(a.val_images),
                                        skeleton_of(a), a.signal))
    # the proxies' images come from the training split, which no GHN score reads
    predictors += [baseline_predictor(kind, splits.train.head(a.proxy_images)) for kind in a.baselines]
    results = correlate_table(predictors, table, a.column, a.out, progress=not a.quiet, resamples=a.resamples)
    for column in results:
        print((Path(a.out) / f"table_{column}.md").read_text())
    print(f"tables and scatter plots in {a.out}")
    return 0


def _select_indices(archs, records, start: int, stop: Optional[int]):
    """The ground-truth architectures whose index is in [start, stop), e.g. ones added after a first study."""
    keep = [i for i, r in enumerate(records) if r["index"] >= start and (stop is None or r["index"] < stop)]
    if len(keep) < 3:
        raise InputError(f"--indices {_range_text(start, stop)} selects {len(keep)} of the ground "
                         f"truth's {len(records)} architectures; a correlation needs at least 3")
    return [archs[i] for i in keep], [records[i] for i in keep]


def _indices_text(indices: Optional[tuple[int, Optional[int]]]) -> str:
    return f" (indices {_range_text(*indices)})" if indices else ""


def cmd_ablate(a: argparse.Namespace) -> int:
    from ghn_ext.studies.ablation import run_ablation

    base = TrainConfig(batch_size=a.batch_size, lr=a.lr, seed=a.seed, ghn=GHNConfig(tile_channels=a.tile_channels))
    report = run_ablation(a.groundtruth, a.out, a.steps, a.study or STUDIES, a.nodes, a.T, base, a.data_dir,
                          progress=not a.quiet)
    print(report, end="")
    print(f"tables and plots in {a.out}")
    return 0


def cmd_compare_top(a: argparse.Namespace) -> int:
    from ghn_ext.studies.topk import compare_top_with_random

    result = compare_top_with_random(a.groundtruth, a.ranking, a.out, a.k, a.data_dir, progress=not a.quiet)
    print(result["markdown"], end="")
    print(f"comparison and plot in {a.out}")
    return 0


def _index_range(text: str) -> tuple[int, Optional[int]]:
    start, sep, stop = text.partition(":")
    try:
        lo, hi = int(start or 0), (int(stop) if stop else None)
        valid = bool(sep) and lo >= 0 and (hi is None or hi > lo)
    except ValueError:
        valid = False
    if not valid:
        raise argparse.ArgumentTypeError(f"expected START:STOP with 0 <= START < STOP (either may be left out), "
                                         f"got {text!r}")
    return lo, hi


def _range_text(start: int, stop: Optional[int]) -> str:
    return f"{start}:{'' if stop is None else stop}"


def add_arguments(verb: str, p: argparse.ArgumentParser) -> None:
    {"groundtruth": _groundtruth_arguments, "correlate": _correlate_arguments, "ablate": _ablate_arguments,
     "compare-top": _compare_top_arguments}[verb](p)


def _groundtruth_arguments(p: argparse.ArgumentParser) -> None:
    space_args(p, defaults={k: getattr(Protocol, k) for k in ("num_nodes", "num_blocks", "channels", "cells_per_stage")})
    shared_args(p, "data_dir", "seed", "quiet")
    p.add_argument("--out", required=True, help="results JSON file (e.g. bench/studies/classification_correlation/groundtruth/classification.json)")
    p.add_argument("--num-archs", type=positive_int, default=50)
    p.add_argument("--train-images", type=positive_int, default=Protocol.train_images,
                   help="first images of the training split")
    p.add_argument("--epochs", type=positive_int, default=Protocol.epochs)
    p.add_argument("--batch-size", type=positive_int, default=Protocol.batch_size)
    p.add_argument("--lr", type=learning_rate, default=Protocol.lr)
    p.add_argument("--val-images", type=positive_int, default=Protocol.val_images)
    p.add_argument("--repeats", type=positive_int, default=Protocol.repeats,
                   help="SGD runs per architecture (seeds SEED, SEED+1, ...); its accuracy is their mean")
    p.add_argument("--shard", type=shard_argument, default=(0, 1),
                   help="r/n: train only architectures i with i %% n == r; n processes, one per shard, can "
                   "grow the same --out file at once")
    p.set_defaults(func=cmd_groundtruth)


def _correlate_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--space", choices=tuple(s for s in SPACES if not get_space(s).anytime), default="classification",
                   help="nb201: --groundtruth is a CSV table of published NAS-Bench-201 accuracies "
                   "(e.g. dev_1000.csv); the baselines (parameter count, FLOPs, synflow, NASWOT, the "
                   "table's 12-epoch column) are tabulated beside the GHNs")
    p.add_argument("--groundtruth", required=True, help="results file of `ghn groundtruth`, or with "
                   "--space nb201 a CSV table with an 'arch' column")
    p.add_argument("--column", type=lambda t: [c for c in t.split(",") if c], default=["cifar10_test_200ep"],
                   help="nb201: the table's accuracy column(s) to rank against, comma-separated")
    p.add_argument("--cells", type=nonnegative_int, default=0, help="nb201: only the table's first N cells (0: all)")
    p.add_argument("--baselines", type=lambda t: [c for c in t.split(",") if c],
                   default=["params", "flops", "synflow", "naswot"],
                   help="nb201: comma-separated baselines among params, flops, synflow, naswot ('' for none)")
    p.add_argument("--val-images", type=positive_int, default=1000, help="nb201: validation images a GHN scores on")
    p.add_argument("--proxy-images", type=positive_int, default=128, help="nb201: images of the NASWOT score")
    p.add_argument("--channels", type=positive_int, default=None,
                   help="nb201: skeleton width a GHN scores cells in (default: the GHN's training width)")
    p.add_argument("--cells-per-stage", type=positive_int, default=None,
                   help="nb201: cells per stage a GHN scores cells in (default: the GHN's training skeleton)")
    p.add_argument("--resamples", type=positive_int, default=1000, help="nb201: bootstrap resamples of the intervals")
    p.add_argument("--signal", choices=("accuracy", "loss"), default=None,
                   help="nb201: a GHN's score, validation accuracy or (negated) loss (default: the GHN's, nb201's loss)")
    p.add_argument("--ghn", action="append", default=[], metavar="[NAME=]PATH",
                   help="a trained GHN (ghn.pt); repeat to compare several")
    p.add_argument("--oneshot", metavar="[NAME=]PATH",
                   help="a trained one-shot model (oneshot.pt from `ghn train --model oneshot`)")
    p.add_argument("--sgd-steps", type=int_list(positive_int), default=[], help="comma-separated k of SGD-k, e.g. 1,2,9,100")
    p.add_argument("--finetune-steps", type=int_list(nonnegative_int), default=[],
                   help="comma-separated k of NAME+SGD-k: the weights of each --ghn (and of --oneshot) "
                   "trained k more SGD steps, then scored")
    p.add_argument("--batch-stats", action="store_true",
                   help="evaluate SGD-k and NAME+SGD-k networks with each validation batch's BatchNorm "
                   "statistics, as the GHN's score is, not with running averages that a few steps barely "
                   "move; their rows are named '... (batch stats)'")
    p.add_argument("--sgd-seed", type=seed, default=None,
                   help="seed of the SGD-k and NAME+SGD-k runs (image order; SGD-k's initial weights too); "
                   "default: the ground truth's. Rows of another seed are named '..., SGD seed S', so "
                   "runs of several seeds show how much a few steps' randomness moves a ranking")
    p.add_argument("--out", required=True, help="folder: predictions.json (cache), table.md, scatter.png; "
                   "with no predictor given (on nb201 that includes --baselines ''), the cached scores are "
                   "tabulated against --groundtruth")
    p.add_argument("--indices", type=_index_range, metavar="START:STOP",
                   help="only the ground truth's architectures with START <= index < STOP, e.g. 50: for "
                   "those added after the first 50 (a held-out set for predictors chosen on those)")
    shared_args(p, "data_dir", "quiet")
    p.set_defaults(func=cmd_correlate)


def _ablate_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--groundtruth", required=True, help="results file of `ghn groundtruth`")
    p.add_argument("--out", required=True, help="folder: one run per variant, predictions.json, ablation.md, PNGs")
    p.add_argument("--study", action="append", choices=STUDIES, default=None,
                   help="repeat to choose several (default: all three)")
    p.add_argument("--steps", type=positive_int, default=300, help="training steps of every variant")
    p.add_argument("--nodes", type=int_list(positive_int), default=[3, 5, 7, 11, classification.EVAL_NODES], help="N of the nodes study")
    p.add_argument("--T", type=int_list(positive_int), default=[1, 3, 5], help="T of the propagation study")
    p.add_argument("--tile-channels", type=positive_int, default=32, help="channels of the weight tile the GHN emits")
    p.add_argument("--block-channels", dest="tile_channels", type=positive_int, action=DeprecatedAlias,
                   instead="--tile-channels", help="deprecated spelling of --tile-channels")
    p.add_argument("--batch-size", type=positive_int, default=64)
    p.add_argument("--lr", type=learning_rate, default=1e-3)
    shared_args(p, "seed", "data_dir", "quiet")
    p.set_defaults(func=cmd_ablate, holds="out")


def _compare_top_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--groundtruth", required=True, help="results file of `ghn groundtruth` (protocol, random k)")
    p.add_argument("--ranking", required=True, help="ranking.json of `ghn search` at the protocol's shape")
    p.add_argument("--k", type=positive_int, default=10)
    p.add_argument("--out", required=True, help="folder: trained.json, compare.md, compare.json, compare.png")
    shared_args(p, "data_dir", "quiet")
    p.set_defaults(func=cmd_compare_top, holds="out")
