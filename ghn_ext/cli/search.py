"""`ghn score`, `ghn search` and `ghn show`: scoring, ranking and looking at architectures."""
from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

from ghn_ext.cli.common import ghn_for, not_anytime, per_space, shared_args, skeleton_of, space_args
from ghn_ext.cli.types import nonnegative_int, positive_int
from ghn_ext.core.distributed import add_device_argument, distributed_run
from ghn_ext.models.pretrained import manifest
from ghn_ext.models.scoring import DEFAULT_IMAGES, SIGNALS
from ghn_ext.spaces import SPACES, get_space
from ghn_ext.spaces.reading import parse_architecture, read_architectures
from ghn_ext.workflows.search import FINALIST_KEYS
from ghn_ext.workflows.report import print_ranking, time_summary


def cmd_score(a: argparse.Namespace) -> int:
    """Each score printed (and appended to --output) as soon as it is computed; a rerun reads back what
    --output holds (ghn_ext.workflows.score.score_file)."""
    from tqdm import tqdm
    from ghn_ext.core.timing import choose_threads
    from ghn_ext.workflows.score import score_file
    ghn = ghn_for(a)

    def plan(todo: int, before: int) -> None:
        print(f"scoring {todo} architecture(s) on {a.val_images} validation images with {choose_threads()}"
              + (f"; {before} scored before, read from {a.output}" if before else ""), file=sys.stderr, flush=True)

    rows = score_file(ghn, a.archs, a.output, a.val_images, signal=a.signal, skeleton=skeleton_of(a),
                      data_dir=a.data_dir, archs_per_batch=a.archs_per_batch, progress=not a.quiet, on_start=plan,
                      on_row=lambda row, before: tqdm.write(f"{row['score']:.4f}  {row['arch']}", file=sys.stdout))
    if a.output:
        print(f"saved {len(rows)} scores to {a.output}")
    return 0


def _search_config(a: argparse.Namespace):
    from ghn_ext.workflows.search import SearchConfig
    return SearchConfig(num_archs=a.num_archs, num_nodes=a.num_nodes, num_blocks=a.num_blocks,
                        channels=a.channels, cells_per_stage=a.cells_per_stage, val_images=a.val_images,
                        min_images=a.min_images, eta=a.eta, min_final=a.min_final,
                        archs_per_batch=a.archs_per_batch, seed=a.seed,
                        data_dir=a.data_dir,
                        finetune_steps=a.finetune_steps, signal=a.signal, combine=a.combine or "",
                        finalists=a.finalists, finalist_images=a.finalist_images, finalist_rank=a.finalist_rank,
                        finalist_skeleton={"cells_per_stage": a.finalist_cells_per_stage}
                        if a.finalist_cells_per_stage else None)


def cmd_search(a: argparse.Namespace) -> int:
    not_anytime(a, "search")
    from ghn_ext.core.timing import Stopwatch, choose_threads
    from ghn_ext.workflows.search import for_ghn, halving_rounds, run_search, top_best
    ghn = ghn_for(a)
    cfg = for_ghn(_search_config(a), ghn)
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
        graph = read_architectures(a.arch, a.space, **skeleton_of(a))[0]
    elif a.arch is not None:  # "" too: an empty string is a malformed cell, not a request for a random one
        graph = parse_architecture(a.arch, a.space, **skeleton_of(a))
    else:
        graph = get_space(a.space).sampler(**skeleton_of(a))(random.Random(a.seed))
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
    space_args(p, note="; a GHN that scores in its training skeleton, nb201's, scores there")
    shared_args(p, "data_dir", "seed", "quiet")
    p.add_argument("--ckpt", default=None,
                   help="GHN file (ghn.pt from `ghn train`) or the name of a shipped one (" + ", ".join(manifest())
                   + "); default: the space's shipped GHN")
    p.add_argument("--val-images", type=positive_int, default=DEFAULT_IMAGES,
                   help="validation images each score is a mean over (the held-out split has 5,000)")
    p.add_argument("--archs-per-batch", type=positive_int, default=4, help="architectures whose weights are "
                   "generated together")
    p.add_argument("--signal", choices=SIGNALS, default=None,
                   help="score by validation accuracy or by (negated) validation loss with generated weights "
                   "(default: the GHN's; for the spaces' own: " + per_space({n: get_space(n).signal for n in SPACES})
                   + ")")
    if verb == "score":
        p.add_argument("--archs", required=True, help="file: one architecture per line")
        p.add_argument("--output", help="JSON-lines file for the scores")
        p.set_defaults(func=cmd_score, holds="output")
    else:
        p.add_argument("--out", required=True, help="search folder (resumes)")
        p.add_argument("--num-archs", type=positive_int, default=1000, help="random candidates to rank")
        p.add_argument("--min-images", type=nonnegative_int, default=500,
                       help="adaptive evaluation: every candidate is scored on this many images, the best "
                       "1/eta on eta times as many, ... the last round on all --val-images (0: every "
                       "candidate on all of them)")
        p.add_argument("--eta", type=positive_int, default=3, help="adaptive evaluation: keep the best 1/eta each round")
        p.add_argument("--min-final", type=positive_int, default=30,
                       help="adaptive evaluation: at least this many candidates reach all --val-images")
        p.add_argument("--show-top", type=positive_int, default=10, help="rows of the ranking printed")
        p.add_argument("--top-best", type=nonnegative_int, default=0, help="train this many of the best with SGD")
        p.add_argument("--top-best-steps", type=positive_int, default=200, help="SGD steps of each --top-best training")
        p.add_argument("--combine", choices=("synflow",), default=None,
                       help="rank by the mean of the GHN's and the synflow proxy's ranks (on the "
                       "NAS-Bench-201 dev set it ranks better than either alone: bench/RESULTS.md)")
        p.add_argument("--finetune-steps", type=nonnegative_int, default=0,
                       help="GHN+SGD-k: train each architecture's generated weights k SGD steps before "
                       "scoring it (0: generated weights as they are, the paper's score)")
        p.add_argument("--finalists", type=nonnegative_int, default=0,
                       help="a last stage: the best K of the ranking scored again in a deeper skeleton "
                       "(--finalist-cells-per-stage) and ranked among themselves by --finalist-rank (0: none)")
        p.add_argument("--finalist-cells-per-stage", type=positive_int, default=None,
                       help="cells per stage the finalists are scored in (default: the GHN's own)")
        p.add_argument("--finalist-images", type=positive_int, default=500, help="validation images of that score")
        p.add_argument("--finalist-rank", type=lambda t: tuple(x for x in t.split(",") if x),
                       default=("score", "finalist_score", "params"), metavar="FIELD,...",
                       help="the finalists' order: the rank mean of these, among " + ", ".join(FINALIST_KEYS)
                       + " (default: score,finalist_score,params)")
        add_device_argument(p)
        p.set_defaults(func=cmd_search, holds="out")


def _show_arguments(p: argparse.ArgumentParser) -> None:
    space_args(p)
    shared_args(p, "seed")
    p.add_argument("--arch", help="an architecture (NAS-Bench-201 string, JSON cell or graph) or a file of them "
                                  "(the first is shown)")
    p.add_argument("--out", help="PNG (graphviz where installed, else matplotlib) or .dot file")
    p.add_argument("--cell", action="store_true", help="render only the first cell")
    p.set_defaults(func=cmd_show)


