"""`ghn score`, `ghn search` and `ghn show`: scoring, ranking and looking at architectures."""
from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path
from typing import Optional

from ghn_ext.cli.common import load_scoring_ghn, not_anytime, space_args
from ghn_ext.cli.types import nonnegative_int, positive_int
from ghn_ext.core.distributed import add_device_argument, distributed_run
from ghn_ext.spaces import classification, make_sampler, nb201
from ghn_ext.spaces.reading import parse_architecture, read_architectures
from ghn_ext.workflows.report import print_ranking, time_summary


def _earlier_scores(path: Optional[str], signal: str, images: int, scorer: str) -> dict[str, dict]:
    """The rows of an earlier `ghn score --output` run by hash, those of the same signal, images and
    scorer (ghn_ext.workflows.evaluate.scorer_digest) only; lines cut short by a kill are skipped."""
    rows: dict[str, dict] = {}
    if path and Path(path).is_file():
        for line in Path(path).read_text().splitlines():
            try:
                row = json.loads(line)
                if (row.get("signal"), row.get("images"), row.get("scorer")) == (signal, images, scorer):
                    rows[row["hash"]] = row
            except (json.JSONDecodeError, KeyError, TypeError, AttributeError):
                continue
    return rows


def cmd_score(a: argparse.Namespace) -> int:
    """Scores in batches of --archs-per-batch, each line printed and appended to --output as soon as its
    batch is scored: a killed run keeps every score it printed, and a rerun scores only the others.
    At the end --output is rewritten with one row per architecture, in the order of --archs."""
    from ghn_ext.core.data import cifar10_splits
    from ghn_ext.core.files import atomic_write, end_with_newline
    from ghn_ext.core.progress import progress_bar
    from ghn_ext.core.timing import choose_threads
    from ghn_ext.workflows.evaluate import (
        IMAGE_BATCH,
        score_architectures,
        scorer_digest,
    )
    ghn = load_scoring_ghn(a)
    archs = read_architectures(a.archs, a.space, a.num_blocks, a.channels, a.cells_per_stage)
    scorer = scorer_digest(ghn, IMAGE_BATCH)
    done = _earlier_scores(a.output, a.signal, a.val_images, scorer)
    todo = [g for g in archs if g.stable_hash() not in done]
    print(f"scoring {len(todo)} architecture(s) on {a.val_images} validation images with {choose_threads()}"
          + (f"; {len(archs) - len(todo)} scored before, read from {a.output}" if len(todo) < len(archs) else ""),
          file=sys.stderr, flush=True)
    for g in archs:
        if g.stable_hash() in done:
            print(f"{done[g.stable_hash()]['score']:.4f}  {done[g.stable_hash()]['arch']}")
    val = cifar10_splits(a.data_dir).val.head(a.val_images).prepared()
    if a.output:
        end_with_newline(a.output)
    output = Path(a.output).open("a") if a.output else None
    try:
        with progress_bar(len(archs), len(archs) - len(todo), desc="score", disable=a.quiet) as bar:
            for start in range(0, len(todo), a.archs_per_batch):
                chunk = todo[start:start + a.archs_per_batch]
                for g, score in zip(chunk, score_architectures(ghn, chunk, val, IMAGE_BATCH, a.signal)):
                    name = nb201.arch_string(g) if g.space == "nb201" else g.stable_hash()
                    row = {"arch": name, "hash": g.stable_hash(), "signal": a.signal, "images": a.val_images,
                           "scorer": scorer, "score": score}
                    done[row["hash"]] = row
                    bar.write(f"{score:.4f}  {name}", file=sys.stdout)
                    if output:
                        output.write(json.dumps(row) + "\n")
                if output:
                    output.flush()
                sys.stdout.flush()
                bar.set_postfix(best=f"{max(r['score'] for r in done.values()):.4f}")
                bar.update(len(chunk))
    finally:
        if output:
            output.close()
    if a.output:
        rows = "".join(json.dumps(done[g.stable_hash()]) + "\n" for g in archs)
        atomic_write(a.output, lambda f: f.write(rows.encode()))
        print(f"saved {len(archs)} scores to {a.output}")
    return 0


def _search_config(a: argparse.Namespace):
    from ghn_ext.workflows.search import SearchConfig
    return SearchConfig(num_archs=a.num_archs, num_nodes=a.num_nodes, num_blocks=a.num_blocks,
                        channels=a.channels, cells_per_stage=a.cells_per_stage, val_images=a.val_images,
                        min_images=a.min_images, eta=a.eta, min_final=a.min_final,
                        archs_per_batch=a.archs_per_batch, seed=a.seed,
                        data_dir=a.data_dir,
                        finetune_steps=a.finetune_steps, signal=a.signal, combine=a.combine or "")


def cmd_search(a: argparse.Namespace) -> int:
    not_anytime(a, "search")
    from ghn_ext.core.timing import Stopwatch, choose_threads
    from ghn_ext.workflows.search import halving_rounds, run_search, top_best
    ghn = load_scoring_ghn(a)
    cfg = _search_config(a)
    rounds = halving_rounds(cfg)
    watch = Stopwatch()
    with distributed_run(a.device) as ctx:
        if ctx.is_main:
            plan = " -> ".join(f"{n} on {k} images" for k, n in rounds)
            where = ctx.device if ctx.device.type != "cpu" or ctx.distributed else choose_threads()
            print(f"search: {plan}; {where}", flush=True)
        ranking = run_search(ghn.to(ctx.device), cfg, a.out, progress=not a.quiet, ctx=ctx, watch=watch)
    if not ctx.is_main:
        return 0
    print_ranking(ranking, a.show_top)
    print(time_summary(watch.report(), len(ranking)))
    if a.top_best:
        best = top_best(ranking, a.space, cfg, a.out, a.top_best, a.top_best_steps, progress=not a.quiet)
        print(f"top-best after {a.top_best_steps} SGD steps: {best['hash']} val acc {best['trained_val_acc']:.4f}")
    print(f"ranking written to {Path(a.out) / 'ranking.json'}")
    return 0


def cmd_show(a: argparse.Namespace) -> int:
    from ghn_ext.nets.network import summary
    if a.arch is not None and Path(a.arch).is_file():
        graph = read_architectures(a.arch, a.space, a.num_blocks, a.channels, a.cells_per_stage)[0]
    elif a.arch is not None:  # "" too: an empty string is a malformed cell, not a request for a random one
        graph = parse_architecture(a.arch, a.num_blocks, a.channels, a.cells_per_stage)
    else:
        graph = make_sampler(a.space, a.num_nodes, a.num_blocks, a.channels, a.cells_per_stage)(
            random.Random(a.seed))
    print(summary(graph))
    if a.out:
        out = Path(a.out)
        cell = graph.subgraph_of_block(1) if a.cell else graph
        if out.suffix == ".dot":
            out.write_text(cell.to_dot())
        else:
            cell.render_png(out, title=graph.stable_hash())
        print(f"rendered to {out}")
    return 0


def add_arguments(verb: str, p: argparse.ArgumentParser) -> None:
    """The options of `ghn score`, `ghn search` or `ghn show`."""
    if verb == "show":
        _show_arguments(p)
        return
    space_args(p, classification.EVAL_NODES)
    p.add_argument("--ckpt", default=None,
                   help="GHN file (ghn.pt from `ghn train`) or the name of a shipped one (nb201); "
                   "default: the space's shipped GHN")
    p.add_argument("--val-images", type=positive_int, default=5000)
    p.add_argument("--archs-per-batch", type=positive_int, default=4, help="architectures whose weights are "
                   "generated together")
    # nb201 cells are scored in the skeleton their GHN was trained in unless these are given
    p.set_defaults(cells_per_stage=None)
    p.add_argument("--signal", choices=("accuracy", "loss"), default=None,
                   help="score by validation accuracy or by (negated) validation loss with generated "
                   "weights (default: loss for nb201, accuracy otherwise)")
    if verb == "score":
        p.add_argument("--archs", required=True, help="file: one architecture per line")
        p.add_argument("--output", help="JSON-lines file for the scores")
        p.set_defaults(func=cmd_score, holds="output")
    else:
        p.add_argument("--out", required=True, help="search folder (resumes)")
        p.add_argument("--num-archs", type=positive_int, default=1000)
        p.add_argument("--min-images", type=nonnegative_int, default=500,
                       help="adaptive evaluation: every candidate is scored on this many images, the best "
                       "1/eta on eta times as many, ... the last round on all --val-images (0: every "
                       "candidate on all of them)")
        p.add_argument("--eta", type=positive_int, default=3, help="adaptive evaluation: keep the best 1/eta each round")
        p.add_argument("--min-final", type=positive_int, default=30,
                       help="adaptive evaluation: at least this many candidates reach all --val-images")
        p.add_argument("--show-top", type=positive_int, default=10)
        p.add_argument("--top-best", type=nonnegative_int, default=0, help="train this many of the best with SGD")
        p.add_argument("--top-best-steps", type=positive_int, default=200)
        p.add_argument("--combine", choices=("synflow",), default=None,
                       help="rank by the mean of the GHN's and the synflow proxy's ranks (on the "
                       "NAS-Bench-201 dev set it ranks better than either alone: bench/RESULTS.md)")
        p.add_argument("--finetune-steps", type=nonnegative_int, default=0,
                       help="GHN+SGD-k: train each architecture's generated weights k SGD steps before "
                       "scoring it (0: generated weights as they are, the paper's score)")
        add_device_argument(p)
        p.set_defaults(func=cmd_search, holds="out")


def _show_arguments(p: argparse.ArgumentParser) -> None:
    space_args(p, classification.EVAL_NODES)
    p.add_argument("--arch", help="an architecture (NAS-Bench-201 string, JSON cell or graph) or a file of them "
                                  "(the first is shown)")
    p.add_argument("--out", help="PNG (graphviz where installed, else matplotlib) or .dot file")
    p.add_argument("--cell", action="store_true", help="render only the first cell")
    p.set_defaults(func=cmd_show)


