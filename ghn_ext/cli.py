"""The `ghn` command: train, score, search, show, demo, anytime ..."""
from __future__ import annotations

import argparse
import contextlib
import json
import random
import sys
from pathlib import Path
from typing import Optional, Sequence

from . import anytime_cli
from .ablation import STUDIES
from .cli_types import fraction, int_list, learning_rate, nonnegative_int, nonnegative_real, positive_int, seed
from .data import DatasetError
from .distributed import add_device_argument, distributed_run, launched_as_main
from .ghn import CheckpointError, GraphHyperNetwork
from .graph import ArchGraph, GraphError
from .io import InUseError, run_file, run_folder
from .final import FinalConfig
from .groundtruth import Protocol, parse_shard, run_groundtruth
from .spaces import SPACES, classification, make_sampler, nb201
from .train import NonFiniteLossError, TrainConfig, Trainer

# Everything a user can get wrong ends as one clear line, never a traceback.
USER_ERRORS = (GraphError, CheckpointError, DatasetError, NonFiniteLossError, ValueError, FileNotFoundError,
               InUseError)


def _space_args(p: argparse.ArgumentParser, num_nodes: int, num_blocks: int = 18) -> None:
    p.add_argument("--space", choices=SPACES, default="classification")
    p.add_argument("--num-nodes", type=positive_int, default=num_nodes, help="nodes per cell (classification)")
    p.add_argument("--num-blocks", type=positive_int, default=num_blocks, help="cells of a classification network")
    p.add_argument("--channels", type=positive_int, default=None, help="initial width (32 classification, 16 nb201)")
    p.add_argument("--cells-per-stage", type=positive_int, default=5, help="NAS-Bench-201 cells per stage")
    p.add_argument("--data-dir", default=None, help="CIFAR-10 folder (default: $GHN_DATA_DIR)")
    p.add_argument("--seed", type=seed, default=0)
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _train_config(a: argparse.Namespace) -> TrainConfig:
    from .train import SPACE_TRAIN_DEFAULTS
    defaults = {"cells_per_stage": 5, "steps": 1000, "snapshot_every": 0, **SPACE_TRAIN_DEFAULTS.get(a.space, {})}
    for key, value in defaults.items():  # flags left unset take the space's defaults
        if getattr(a, key) is None:
            setattr(a, key, value)
    ghn = {"T": a.T, "scheme": a.scheme, "share_params": not a.no_share, "pass_embedding": not a.no_pass,
           "naive_hypernet": a.naive, "block_channels": a.block_channels}
    return TrainConfig(space=a.space, steps=a.steps, batch_size=a.batch_size, archs_per_step=a.archs_per_step,
                       lr=a.lr, ema=a.ema, num_nodes=a.num_nodes, num_blocks=a.num_blocks, channels=a.channels,
                       cells_per_stage=a.cells_per_stage, seed=a.seed, eval_every=a.eval_every,
                       eval_archs=a.eval_archs, eval_images=a.eval_images,
                       checkpoint_every=a.checkpoint_every, snapshot_every=a.snapshot_every,
                       data_dir=a.data_dir, ghn=ghn, model=a.model)


def cmd_train(a: argparse.Namespace) -> int:
    cfg = _train_config(a)
    with distributed_run(a.device) as ctx:
        trainer = Trainer(cfg, a.out, ctx)
        resumed = not a.restart and trainer.resume()
        if resumed and ctx.is_main:
            print(f"resuming {a.out} at step {trainer.step}")
        result = trainer.run(progress=not a.quiet)
    if ctx.is_main:
        print(f"trained {result['step']} steps on {ctx.world_size} process(es); {a.model} saved to "
              f"{Path(a.out) / (a.model + '.pt')}")
    return 0


def parse_architecture(text: str, num_blocks: int = 18, channels: Optional[int] = None,
                       cells_per_stage: int = 5) -> ArchGraph:
    """One architecture: a NAS-Bench-201 string, architecture-graph JSON, or a classification cell as
    JSON ({"ops": [...], "inputs": [[...], ...]}); a GraphError says what is wrong with it."""
    text = text.strip()
    if not text.startswith(("{", "[")):
        return nb201.network(text, channels or 16, cells_per_stage)
    try:
        d = json.loads(text)
    except json.JSONDecodeError as exc:
        raise GraphError(f"not valid JSON ({exc})") from None
    if not isinstance(d, dict):
        raise GraphError(f"expected a JSON object (a cell or an architecture graph), got {type(d).__name__}")
    if "format" in d:
        return ArchGraph.from_dict(d)
    return classification.cifar_network(classification.Cell.from_dict(d), num_blocks, channels or 32)


def read_architectures(path: str | Path, space: str, num_blocks: int = 18, channels: Optional[int] = None,
                       cells_per_stage: int = 5) -> list[ArchGraph]:
    """Architectures from a file, one per line (see :func:`parse_architecture`; # starts a comment)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"architecture file {path} does not exist")
    if not path.is_file():
        raise FileNotFoundError(f"architecture file {path} is not a file")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise GraphError(f"{path} is not a text file of architectures (byte {exc.start} is not UTF-8)") from None
    archs = []
    for lineno, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            archs.append(parse_architecture(line, num_blocks, channels, cells_per_stage))
        except GraphError as exc:
            message = str(exc)  # it may quote the line: a long one is cut, not echoed whole
            raise GraphError(f"{path}:{lineno}: " + (message[:300] + " ... (cut)" if len(message) > 300 else message)
                             ) from exc
        if archs[-1].space not in (space, "custom"):
            raise GraphError(f"{path}:{lineno}: a {archs[-1].space!r} architecture, but --space is {space!r}")
    if not archs:
        raise GraphError(f"{path} holds no architectures")
    return archs


def _not_anytime(a: argparse.Namespace, instead: str) -> None:
    """These verbs rank or train by one accuracy; anytime networks are judged by their exits' curve."""
    if a.space == "anytime":
        raise ValueError(f"`ghn {a.command}` does not handle anytime networks; use `ghn anytime {instead}`")


def load_scoring_ghn(a: argparse.Namespace) -> GraphHyperNetwork:
    """The GHN of `--ckpt` (a file, or the name of a GHN shipped with the package), or without it the
    space's shipped GHN. Sets a.channels and a.cells_per_stage where not given: for NAS-Bench-201 the
    skeleton the GHN was trained in, which is where it scores cells."""
    from .evaluate import DEFAULT_SIGNAL
    from .pretrained import manifest, resolve_checkpoint
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


def _earlier_scores(path: Optional[str], signal: str, images: int, scorer: str) -> dict[str, dict]:
    """The rows of an earlier `ghn score --output` run by hash, those of the same signal, images and
    scorer (ghn_ext.evaluate.scorer_digest) only; lines cut short by a kill are skipped."""
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
    from .data import cifar10_splits
    from .evaluate import IMAGE_BATCH, score_architectures, scorer_digest
    from .io import atomic_write, end_with_newline
    from .progress import progress_bar
    from .timing import choose_threads
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
    from .search import SearchConfig
    return SearchConfig(num_archs=a.num_archs, num_nodes=a.num_nodes, num_blocks=a.num_blocks,
                        channels=a.channels, cells_per_stage=a.cells_per_stage, val_images=a.val_images,
                        min_images=a.min_images, eta=a.eta, min_final=a.min_final,
                        archs_per_batch=a.archs_per_batch, seed=a.seed,
                        data_dir=a.data_dir,
                        finetune_steps=a.finetune_steps, signal=a.signal, combine=a.combine or "")


def print_ranking(ranking: Sequence[dict], top: int) -> None:
    label = "-val loss" if ranking and ranking[0].get("signal") == "loss" else "val acc"
    combined = bool(ranking) and "combined" in ranking[0]  # ranked by GHN + synflow: show that key too
    print(f"{'rank':>4}  " + ("GHN+synflow  " if combined else "")
          + f"{label:>9}  {'params':>9}  {'MFLOPs':>8}  architecture")
    for r, rec in enumerate(ranking[:top], 1):
        arch = rec["arch"] if isinstance(rec["arch"], str) else " ".join(rec["arch"]["ops"])
        print(f"{r:>4}  " + (f"{rec['combined']:>11.4f}  " if combined else "")
              + f"{rec['score']:>9.4f}  {rec['params']:>9,}  {rec['flops'] / 1e6:>8.1f}  {arch}")


def time_summary(timing: dict, num_archs: int) -> str:
    """One line: wall time, architectures per second, and each phase's share."""
    total = timing["total"]
    phases = ", ".join(f"{k} {timing[k] / max(total, 1e-9):.0%}" for k in ("data", "sample", "ghn", "evaluate", "rank", "other")
                       if k in timing)
    return f"{num_archs} architectures in {total:.1f} s ({num_archs / max(total, 1e-9):.2f} per s): {phases}"


def cmd_search(a: argparse.Namespace) -> int:
    _not_anytime(a, "search")
    from .search import halving_rounds, run_search, top_best
    from .timing import Stopwatch, choose_threads
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
    from .nets.network import summary
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


def cmd_demo(a: argparse.Namespace) -> int:
    _not_anytime(a, "train|search|train-final")
    from .demo import run_demo
    run_demo(a.out, a.space, a.budget, a.data_dir, progress=not a.quiet)
    return 0


def cmd_groundtruth(a: argparse.Namespace) -> int:
    _not_anytime(a, "train-final")
    protocol = Protocol(space=a.space, num_nodes=a.num_nodes, num_blocks=a.num_blocks,
                        channels=a.channels or Protocol.channels, cells_per_stage=a.cells_per_stage,
                        train_images=a.train_images, epochs=a.epochs, batch_size=a.batch_size, lr=a.lr,
                        val_images=a.val_images, seed=a.seed, repeats=a.repeats)
    records = run_groundtruth(protocol, a.out, a.num_archs, a.data_dir, progress=not a.quiet, shard=a.shard)
    accs = [r["val_acc"] for r in records]
    timed = [r["train_seconds"] for r in records if "train_seconds" in r]  # a merged retraining has none
    print(f"{len(records)} architectures in {a.out}: validation accuracy {min(accs):.3f} .. {max(accs):.3f}"
          + (f", {sum(timed) / len(timed):.0f} s each (of {len(timed)} timed)" if timed else ""))
    return 0


def cmd_correlate(a: argparse.Namespace) -> int:
    from .correlate import correlate, finetuned_predictor, markdown_table, model_predictor, sgd_predictor
    from .data import cifar10_splits
    from .groundtruth import groundtruth_set
    from .oneshot import OneShotModel

    if a.space == "nb201":
        return _correlate_nb201_table(a)
    if a.finetune_steps and not (a.ghn or a.oneshot):
        raise ValueError("--finetune-steps trains the weights of a GHN or one-shot model: give --ghn or --oneshot")
    given = a.ghn or a.oneshot or a.sgd_steps
    if not (given or (Path(a.out) / "predictions.json").exists()):
        raise ValueError("nothing to compare: give --ghn, --oneshot or --sgd-steps, or an --out folder whose "
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
    from .correlate_nb201 import baseline_predictor, correlate_table, ghn_predictor
    from .data import cifar10_splits
    from .evaluate import DEFAULT_SIGNAL
    from .pretrained import resolve_checkpoint
    from .truth_table import read_truth_table

    unused = [flag for flag, value in (("--oneshot", a.oneshot), ("--sgd-steps", a.sgd_steps),
                                       ("--finetune-steps", a.finetune_steps), ("--indices", a.indices)) if value]
    if unused:
        raise ValueError(f"{', '.join(unused)} apply to a ground truth of `ghn groundtruth`, not to a table of "
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
        path = resolve_checkpoint(path)
        ghn = GraphHyperNetwork.load(path, "nb201")
        channels, cells_per_stage = scoring_skeleton(path, a.channels, a.cells_per_stage)
        predictors.append(ghn_predictor(name or "GHN", ghn, path, splits.val.head(a.val_images), channels,
                                        cells_per_stage, a.signal or DEFAULT_SIGNAL["nb201"]))
    # the proxies' images come from the training split, which no GHN score reads
    predictors += [baseline_predictor(kind, splits.train.head(a.proxy_images)) for kind in a.baselines]
    results = correlate_table(predictors, table, a.column, a.out, progress=not a.quiet, resamples=a.resamples)
    for column in results:
        print((Path(a.out) / f"table_{column}.md").read_text())
    print(f"tables and scatter plots in {a.out}")
    return 0


def scoring_skeleton(checkpoint: str | Path, channels: Optional[int], cells_per_stage: Optional[int]
                     ) -> tuple[int, int]:
    """Where a NAS-Bench-201 GHN scores a cell: the skeleton it was trained in (its checkpoint's training
    settings; 16 channels and 5 cells per stage when they are not recorded), unless given."""
    from .ghn import load_checkpoint
    trained = load_checkpoint(checkpoint).get("train_config") or {}
    return (channels or trained.get("channels") or 16,
            cells_per_stage or trained.get("cells_per_stage") or 5)


def _select_indices(archs, records, start: int, stop: Optional[int]):
    """The ground-truth architectures whose index is in [start, stop), e.g. ones added after a first study."""
    keep = [i for i, r in enumerate(records) if r["index"] >= start and (stop is None or r["index"] < stop)]
    if len(keep) < 3:
        raise ValueError(f"--indices {_range_text(start, stop)} selects {len(keep)} of the ground "
                         f"truth's {len(records)} architectures; a correlation needs at least 3")
    return [archs[i] for i in keep], [records[i] for i in keep]


def _indices_text(indices: Optional[tuple[int, Optional[int]]]) -> str:
    return f" (indices {_range_text(*indices)})" if indices else ""


def cmd_ablate(a: argparse.Namespace) -> int:
    from .ablation import run_ablation

    base = TrainConfig(batch_size=a.batch_size, lr=a.lr, seed=a.seed, ghn={"block_channels": a.block_channels})
    report = run_ablation(a.groundtruth, a.out, a.steps, a.study or STUDIES, a.nodes, a.T, base, a.data_dir,
                          progress=not a.quiet)
    print(report, end="")
    print(f"tables and plots in {a.out}")
    return 0


def cmd_compare_top(a: argparse.Namespace) -> int:
    from .topk import compare_top_with_random

    result = compare_top_with_random(a.groundtruth, a.ranking, a.out, a.k, a.data_dir, progress=not a.quiet)
    print(result["markdown"], end="")
    print(f"comparison and plot in {a.out}")
    return 0


def cmd_train_final(a: argparse.Namespace) -> int:
    _not_anytime(a, "train-final")
    from .final import FinalTrainer
    from .search import SearchConfig, arch_from_record

    if bool(a.arch) == bool(a.ranking):
        raise ValueError("give exactly one of --arch (a file of architectures) and --ranking (ranking.json)")
    if a.arch:
        candidates = read_architectures(a.arch, a.space, a.num_blocks, a.channels, a.cells_per_stage)
    else:
        path = Path(a.ranking)
        if not path.is_file():
            raise FileNotFoundError(f"ranking file {path} does not exist")
        try:
            candidates = json.loads(path.read_text())["ranking"]
        except (json.JSONDecodeError, KeyError, TypeError):
            raise ValueError(f"{path} is not a ranking.json of `ghn search`") from None
    if not 0 <= a.rank < len(candidates):
        raise ValueError(f"--rank {a.rank} is out of range: {len(candidates)} architectures")
    graph = candidates[a.rank]
    if a.ranking:
        macro = SearchConfig(num_blocks=a.num_blocks, channels=a.channels, cells_per_stage=a.cells_per_stage)
        graph = arch_from_record(graph, a.space, macro)
    cfg = FinalConfig(epochs=a.epochs, batch_size=a.batch_size, lr=a.lr, drop_path=a.drop_path,
                      aux_weight=a.aux_weight, cutout=a.cutout, train_images=a.train_images,
                      val_images=a.val_images, seed=a.seed, checkpoint_every=a.checkpoint_every,
                      warmup_epochs=a.warmup_epochs)
    with distributed_run(a.device) as ctx:
        trainer = FinalTrainer(graph, cfg, a.out, a.data_dir, ctx)
        if trainer.resume() and ctx.is_main:
            print(f"resuming {a.out} at step {trainer.step} of {trainer.total_steps}")
        result = trainer.run(progress=not a.quiet)
    if ctx.is_main:
        print(f"{graph.stable_hash()}: validation accuracy {result['val_acc']:.4f}, test accuracy "
              f"{result['test_acc']:.4f}; results in {Path(a.out) / 'result.json'}")
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


def shard_argument(text: str) -> tuple[int, int]:
    """argparse type of --shard r/n (also used by bench/groundtruth_retrain.py)."""
    try:
        return parse_shard(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ghn", description="Graph HyperNetworks for architecture search")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train a GHN on random architectures (resumes from OUT)")
    _space_args(p, classification.TRAIN_NODES)
    p.set_defaults(cells_per_stage=None)  # per space: ghn_ext.train.SPACE_TRAIN_DEFAULTS
    p.add_argument("--out", required=True, help="run folder: checkpoint, log, ghn.pt (oneshot.pt)")
    p.add_argument("--model", choices=("ghn", "oneshot"), default="ghn",
                   help="oneshot: the weight-sharing baseline, trained the same way (use --num-nodes 17)")
    p.add_argument("--steps", type=positive_int, default=None,
                   help="training steps (default 1000; nb201: 20000, with 1 cell per stage and 16 channels)")
    p.add_argument("--batch-size", type=positive_int, default=64)
    p.add_argument("--archs-per-step", type=positive_int, default=1)
    p.add_argument("--lr", type=learning_rate, default=1e-3)
    p.add_argument("--ema", type=fraction, default=0.0,
                   help="keep an exponential moving average of the parameters with this decay (e.g. 0.998) "
                        "and save it instead of the last step's; 0: off")
    p.add_argument("--T", type=positive_int, default=5, help="propagation passes")
    p.add_argument("--scheme", choices=("fb", "sync"), default="fb")
    p.add_argument("--no-share", action="store_true", help="separate GNN parameters per block")
    p.add_argument("--no-pass", action="store_true", help="do not pass block embeddings on")
    p.add_argument("--naive", action="store_true", help="one hypernet output branch per op type")
    p.add_argument("--block-channels", type=positive_int, default=32)
    p.add_argument("--eval-every", type=nonnegative_int, default=0,
                   help="steps between validation checks on unseen architectures (0: at the end only)")
    p.add_argument("--eval-archs", type=positive_int, default=8, help="unseen architectures per validation check")
    p.add_argument("--eval-images", type=positive_int, default=500, help="validation images per check")
    p.add_argument("--checkpoint-every", type=positive_int, default=50)
    p.add_argument("--snapshot-every", type=nonnegative_int, default=None, metavar="K",
                   help="also keep the model every K steps as OUT/<model>_step<K>.pt (0: never; default "
                   "0, nb201: 3000)")
    p.add_argument("--restart", action="store_true", help="ignore an existing checkpoint in OUT")
    add_device_argument(p)
    p.set_defaults(func=cmd_train, holds="out")

    for name, helptext in (("score", "predicted accuracy of architectures listed in a file"),
                           ("search", "rank random architectures with a trained GHN")):
        p = sub.add_parser(name, help=helptext)
        _space_args(p, classification.EVAL_NODES)
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
        if name == "score":
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

    p = sub.add_parser("show", help="print an architecture's summary and render it")
    _space_args(p, classification.EVAL_NODES)
    p.add_argument("--arch", help="an architecture (NAS-Bench-201 string, JSON cell or graph) or a file of them "
                                  "(the first is shown)")
    p.add_argument("--out", help="PNG (needs graphviz) or .dot file")
    p.add_argument("--cell", action="store_true", help="render only the first cell")
    p.set_defaults(func=cmd_show)

    p = sub.add_parser("groundtruth", help="train random architectures with SGD: the correlation benchmark's "
                       "ground truth (resumes, grows with --num-archs)")
    _space_args(p, Protocol.num_nodes, num_blocks=Protocol.num_blocks)
    p.add_argument("--out", required=True, help="results JSON file (e.g. bench/groundtruth/classification.json)")
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
    p.set_defaults(func=cmd_groundtruth, cells_per_stage=Protocol.cells_per_stage)

    p = sub.add_parser("correlate", help="rank correlation of predictors (GHN, one-shot, SGD-k) with the "
                       "ground truth: markdown table and scatter plot (resumes)")
    p.add_argument("--space", choices=("classification", "nb201"), default="classification",
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
                   help="nb201: a GHN's score, validation accuracy or (negated) loss (default: loss)")
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
                   "with no predictor given, the cached scores are tabulated against --groundtruth")
    p.add_argument("--indices", type=_index_range, metavar="START:STOP",
                   help="only the ground truth's architectures with START <= index < STOP, e.g. 50: for "
                   "those added after the first 50 (a held-out set for predictors chosen on those)")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_correlate)

    p = sub.add_parser("ablate", help="the paper's ablations on the ground truth: nodes per training cell, "
                       "sync vs forward-backward over T, stacked-GHN variants (resumes)")
    p.add_argument("--groundtruth", required=True, help="results file of `ghn groundtruth`")
    p.add_argument("--out", required=True, help="folder: one run per variant, predictions.json, ablation.md, PNGs")
    p.add_argument("--study", action="append", choices=STUDIES, default=None,
                   help="repeat to choose several (default: all three)")
    p.add_argument("--steps", type=positive_int, default=300, help="training steps of every variant")
    p.add_argument("--nodes", type=int_list(positive_int), default=[3, 5, 7, 11, 17], help="N of the nodes study")
    p.add_argument("--T", type=int_list(positive_int), default=[1, 3, 5], help="T of the propagation study")
    p.add_argument("--block-channels", type=positive_int, default=32)
    p.add_argument("--batch-size", type=positive_int, default=64)
    p.add_argument("--lr", type=learning_rate, default=1e-3)
    p.add_argument("--seed", type=seed, default=0)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_ablate, holds="out")

    p = sub.add_parser("compare-top", help="train a search's top k under the ground-truth protocol and compare "
                       "them with k random ground-truth architectures (paper Fig. 4; resumes)")
    p.add_argument("--groundtruth", required=True, help="results file of `ghn groundtruth` (protocol, random k)")
    p.add_argument("--ranking", required=True, help="ranking.json of `ghn search` at the protocol's shape")
    p.add_argument("--k", type=positive_int, default=10)
    p.add_argument("--out", required=True, help="folder: trained.json, compare.md, compare.json, compare.png")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_compare_top, holds="out")

    p = sub.add_parser("train-final", help="train a chosen architecture to the end (paper appendix 7.3: "
                       "cosine SGD, cutout, drop-path, auxiliary head; resumes)")
    _space_args(p, classification.EVAL_NODES)
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

    anytime_cli.add_parser(sub)

    p = sub.add_parser("demo", help="train a small GHN, search, and write a report (about 10 minutes)")
    p.add_argument("--space", choices=SPACES, default="classification")
    p.add_argument("--budget", choices=("full", "ci"), default="full",
                   help="full: the ~10 minute demo; ci: a one-minute smoke run")
    p.add_argument("--out", default="report")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_demo, holds="out")
    return parser


def _first_line(exc: BaseException) -> str:
    # some messages (torch.load's on a damaged file) run over several lines
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _out_of_memory(exc: BaseException) -> bool:
    """Whether `exc` is an allocation that failed (sizes too large for this machine), not a bug."""
    import torch
    text = str(exc)
    return (isinstance(exc, (MemoryError, torch.OutOfMemoryError)) or "can't allocate memory" in text
            or "Storage size calculation overflowed" in text)


def _output_held(a: argparse.Namespace) -> contextlib.AbstractContextManager:
    """The command's output (its --out folder or --output file, as its parser's `holds` says) held for
    this run alone; under torchrun rank 0 holds it for all ranks."""
    holds = getattr(a, "holds", None)
    if not launched_as_main() or holds is None or getattr(a, holds) is None:
        return contextlib.nullcontext()
    return run_folder(a.out) if holds == "out" else run_file(a.output)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        with _output_held(args):
            return args.func(args)
    except USER_ERRORS as exc:
        print(f"ghn {args.command}: error: {_first_line(exc)}", file=sys.stderr)
        return 2
    except (MemoryError, RuntimeError) as exc:
        if not _out_of_memory(exc):
            raise  # a bug: its traceback
        print(f"ghn {args.command}: error: out of memory ({_first_line(exc)}); try smaller sizes "
              "(--channels, --batch-size, --archs-per-batch ...)", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"ghn {args.command}: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

