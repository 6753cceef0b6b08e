"""`ghn anytime train|search|train-final`: the anytime experiment (paper Sec. 5.2) from the command line.

    ghn anytime train --out runs/anytime                       # GHN on random-size anytime networks
    ghn anytime search --ckpt runs/anytime/ghn.pt --out runs/anytime/search
    ghn anytime train-final --ranking runs/anytime/search/ranking.json --out runs/anytime/final

The search ranks random full-size networks by the area under their predicted accuracy-FLOPs curve over
a stated FLOPs range (default: zero to the MSDNet-style baseline's total FLOPs); train-final trains the
winner at the width that matches the baseline's FLOPs, and the baseline, with the same recipe, and
plots both curves (paper Fig. 3).
"""
from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path

from ghn_ext.cli import train as train_cli
from ghn_ext.cli.types import learning_rate, nonnegative_int, positive_int, seed
from ghn_ext.core.distributed import add_device_argument, distributed_run
from ghn_ext.workflows.train import TrainConfig
from ghn_ext.core.checks import InputError


def _flops_range(text: str) -> tuple[float, float]:
    try:
        lo, hi = (float(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected LO,HI in FLOPs, e.g. 0,5e7; got {text!r}") from None
    return lo, hi


def _baseline(a: argparse.Namespace):
    from ghn_ext.workflows.anytime import msdnet_graph
    return msdnet_graph(a.baseline_layers, a.channels, a.baseline_exit_every)


def _default_range(a: argparse.Namespace) -> tuple[float, float]:
    from ghn_ext.nets.network import count_flops
    return a.flops_range or (0.0, float(count_flops(_baseline(a))))


def cmd_search(a: argparse.Namespace) -> int:
    from ghn_ext.core.data import cifar10_splits
    from ghn_ext.core.files import write_json_atomic
    from ghn_ext.models.ghn import GraphHyperNetwork
    from ghn_ext.workflows.anytime import score_anytime
    from ghn_ext.workflows.evaluate import IMAGE_BATCH, curve_area, scorer_digest
    from ghn_ext.workflows.search import (
        SearchConfig,
        score_resumably,
        search_architectures,
    )
    flops_range = _default_range(a)
    # full-size networks, architecture i drawn from (seed, i): a rerun resumes from the scores file
    archs = search_architectures(SearchConfig(num_archs=a.num_archs, channels=a.channels, seed=a.seed), "anytime")
    out = Path(a.out)
    with distributed_run(a.device) as ctx:
        ghn = GraphHyperNetwork.load(a.ckpt, space="anytime").to(ctx.device)
        ghn.eval()
        val = cifar10_splits(a.data_dir).val.head(a.val_images)
        scorer = scorer_digest(ghn, IMAGE_BATCH)

        def score_chunk(chunk):
            return [{**rec, "graph": g.to_dict(), "images": a.val_images, "scorer": scorer}
                    for g, rec in zip(chunk, score_anytime(ghn, chunk, val, flops_range, IMAGE_BATCH))]

        # only curves this GHN drew on these images: another --ckpt or --val-images scores again
        records = score_resumably(archs, score_chunk, out, a.archs_per_batch, "area", "anytime search",
                                  not a.quiet, ctx,
                                  reusable=lambda rec: (rec.get("scorer"), rec.get("images")) == (scorer, a.val_images))
    if not ctx.is_main:
        return 0
    # areas from the recorded curves, so that a rerun with another --flops-range ranks by that range
    ranking = sorted(({**r, "area": curve_area(r["exit_flops"], r["exit_acc"], *flops_range)} for r in records),
                     key=lambda r: (-r["area"], r["index"]))
    write_json_atomic({"flops_range": list(flops_range), "ranking": ranking}, out / "ranking.json")
    print(f"area over [{flops_range[0]:.3g}, {flops_range[1]:.3g}] FLOPs; top {min(a.show_top, len(ranking))}:")
    for r, rec in enumerate(ranking[:a.show_top], 1):
        print(f"{r:>4}  area {rec['area']:.4f}  last exit {rec['exit_acc'][-1]:.4f} at "
              f"{rec['exit_flops'][-1] / 1e6:.1f} MFLOPs  {rec['hash']}")
    print(f"ranking written to {out / 'ranking.json'}")
    return 0


def cmd_train_final(a: argparse.Namespace) -> int:
    from ghn_ext.core.data import cifar10_splits
    from ghn_ext.core.files import write_json_atomic
    from ghn_ext.core.graph import ArchGraph
    from ghn_ext.nets.network import count_flops
    from ghn_ext.workflows.anytime import AnytimeTrainConfig, match_width, train_anytime
    from ghn_ext.workflows.evaluate import curve_area, plot_curves
    path = Path(a.ranking)
    if not path.is_file():
        raise FileNotFoundError(f"ranking file {path} does not exist")
    ranking = json.loads(path.read_text())["ranking"]
    if not 0 <= a.rank < len(ranking):
        raise InputError(f"--rank {a.rank} is outside the ranking's {len(ranking)} architectures")
    baseline = _baseline(a)
    arch = match_width(ArchGraph.from_dict(ranking[a.rank]["graph"]), count_flops(baseline))
    flops_range = _default_range(a)
    splits = cifar10_splits(a.data_dir)
    test = splits.test.head(a.test_images)
    cfg = AnytimeTrainConfig(epochs=a.epochs, batch_size=a.batch_size, lr=a.lr, train_images=a.train_images,
                             seed=a.seed)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    results = {}
    for name, graph in (("searched", arch), ("msdnet", baseline)):  # each resumes from its checkpoint
        res = train_anytime(graph, cfg, splits.train, test, progress=not a.quiet, checkpoint=out / f"{name}.pt")
        res["area"] = curve_area(res["exit_flops"], res["exit_acc"], *flops_range)
        res["channels"] = graph.nodes[1].channels
        results[name] = res
        print(f"{name}: area {res['area']:.4f}, exits " +
              ", ".join(f"{acc:.3f}@{f / 1e6:.1f}M" for f, acc in zip(res["exit_flops"], res["exit_acc"])))
    write_json_atomic({"flops_range": list(flops_range), "config": asdict(cfg),
                       "searched_graph": arch.to_dict(), **results}, out / "result.json")
    plot_curves({k: (r["exit_flops"], r["exit_acc"]) for k, r in results.items()}, out / "curves.png",
                flops_range, title=f"CIFAR-10 anytime, {a.epochs} epoch{'s' * (a.epochs != 1)}")
    print(f"results in {out / 'result.json'}, plot {out / 'curves.png'}")
    return 0


def add_arguments(verb: str, p: argparse.ArgumentParser) -> None:
    """`ghn anytime`'s three sub-verbs; its training is `ghn train`'s on the anytime space."""
    verbs = p.add_subparsers(dest="anytime_command", required=True, metavar="{train,search,train-final}")

    def common(q, channels_help):
        q.add_argument("--channels", type=positive_int, default=16, help=channels_help)
        q.add_argument("--data-dir", default=None, help="CIFAR-10 folder (default: $GHN_DATA_DIR)")
        q.add_argument("--seed", type=seed, default=0)
        q.add_argument("--quiet", action="store_true", help="no progress bars")

    def baseline_args(q):
        q.add_argument("--baseline-layers", type=positive_int, default=10)
        q.add_argument("--baseline-exit-every", type=positive_int, default=2)
        q.add_argument("--flops-range", type=_flops_range, default=None,
                       help="LO,HI FLOPs the area is taken over (default: 0 to the baseline's total)")

    q = verbs.add_parser("train", help="train a GHN on random anytime networks (random node counts per block)")
    common(q, "base width of the training networks")
    train_cli.training_args(q)
    q.set_defaults(space="anytime", model="ghn", num_nodes=TrainConfig.num_nodes, num_blocks=TrainConfig.num_blocks,
                   cells_per_stage=None)

    q = verbs.add_parser("search", help="rank random anytime networks by their predicted area")
    common(q, "base width of the candidates and of the baseline that sets the default range")
    baseline_args(q)
    q.add_argument("--ckpt", required=True, help="GHN file (ghn.pt from `ghn anytime train`)")
    q.add_argument("--out", required=True, help="folder for ranking.json")
    q.add_argument("--num-archs", type=positive_int, default=100)
    q.add_argument("--archs-per-batch", type=positive_int, default=4)
    q.add_argument("--val-images", type=positive_int, default=5000)
    q.add_argument("--show-top", type=positive_int, default=10)
    add_device_argument(q)
    q.set_defaults(func=cmd_search, holds="out")

    q = verbs.add_parser("train-final", help="train the chosen network at the baseline's FLOPs, and the "
                         "baseline, with the same recipe; curves and areas")
    common(q, "base width of the MSDNet-style baseline")
    baseline_args(q)
    q.add_argument("--ranking", required=True, help="ranking.json of `ghn anytime search`")
    q.add_argument("--rank", type=nonnegative_int, default=0, help="which architecture of the ranking (0: the best)")
    q.add_argument("--out", required=True, help="folder: checkpoints (a rerun resumes), result.json, curves.png")
    q.add_argument("--epochs", type=positive_int, default=300)
    q.add_argument("--batch-size", type=positive_int, default=64)
    q.add_argument("--lr", type=learning_rate, default=0.1)
    q.add_argument("--train-images", type=positive_int, default=None, help="first images of the training split (all)")
    q.add_argument("--test-images", type=positive_int, default=None, help="first images of the test split (all)")
    q.set_defaults(func=cmd_train_final, holds="out")
