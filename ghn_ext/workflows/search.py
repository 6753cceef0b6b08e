"""Random search with a trained GHN (paper Sec. 5.1.1).

Sample K random architectures (N=17 nodes per cell), score each by validation accuracy with generated
weights, rank them, and optionally train the top ones briefly with SGD to pick the best ("Top-best").

Adaptive evaluation (successive halving): every candidate is first scored on the first `min_images`
validation images, the best third on three times as many, and so on until the last round scores its
contenders on all `val_images`. Scores are sums over consecutive parts of one fixed image list, so a
candidate's score at the last round is exactly its score under full evaluation; the ranking lists the
last round's candidates first, then those each earlier round left behind. `min_images=0` scores
every candidate on every image.
With `finetune_steps` k > 0 the score is GHN+SGD-k instead: the generated weights trained k SGD steps, then
their validation accuracy (BatchNorm on batch statistics, as for the plain score); on the correlation
benchmark this ranks far better than generated weights alone (bench/RESULTS.md).
Scores are appended to a JSON-lines file as they are computed, so an interrupted search resumes where
it stopped; the ranking is rewritten atomically at the end.

Under torchrun (ghn_ext.core.distributed) the chunks of architectures that a single process would score
together are dealt to the ranks, each appending to its own scores file, and rank 0 gathers the scores
into the ranking: the same chunks give the same scores, so the ranking equals the single-process one.
"""
from __future__ import annotations

import json
import math
import random
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import torch

from ghn_ext.core.checks import InputError, MAX_SEED, require_int, require_number
from ghn_ext.core.data import cifar10_splits
from ghn_ext.core.distributed import DistContext, broadcast, deal, gather_lists
from ghn_ext.workflows.sgd import train_briefly
from ghn_ext.models.scoring import validation_images
from ghn_ext.workflows.evaluate import IMAGE_BATCH, check_signal, network_score_sum, scorer_digest
from ghn_ext.models.ghn import GraphHyperNetwork
from ghn_ext.core.graph import ArchGraph
from ghn_ext.core.files import end_with_newline, read_records, write_json_atomic
from ghn_ext.nets.network import count_flops, count_params
from ghn_ext.core.progress import progress_bar
from ghn_ext.nets.proxies import synflow
from ghn_ext.core.rank_measures import rank_mean
from ghn_ext.spaces.spec import get_space
from ghn_ext.core.timing import Stopwatch


FINALIST_KEYS = ("score", "finalist_score", "params", "synflow")


@dataclass(frozen=True)
class SearchConfig:
    """A search. The skeleton settings, the signal and the BatchNorm batch left at None are the GHN's
    (its ScoringConfig: for nb201 the skeleton it was trained in, the negated loss)."""
    num_archs: int = 1000
    num_nodes: Optional[int] = None  # nodes per cell of the searched architectures (classification: 17)
    num_blocks: Optional[int] = None  # cells of a classification network (18)
    channels: Optional[int] = None
    cells_per_stage: Optional[int] = None
    val_images: int = 5000         # fixed validation subset used for every architecture
    min_images: int = 500          # adaptive evaluation: first-round images per candidate (0: off)
    eta: int = 3                   # each round keeps the best 1/eta on eta times as many images
    min_final: int = 30            # ...but at least this many reach the last round (all images)
    archs_per_batch: int = 4       # architectures whose weights are generated together
    image_batch: Optional[int] = None  # BatchNorm uses batch statistics (the GHN's: 100, cache-resident)
    finetune_steps: int = 0        # GHN+SGD-k: SGD steps on the generated weights before scoring
    finetune_lr: float = 0.05      # their learning rate (cosine to zero over the k steps, batch 64)
    signal: Optional[str] = None   # the score: validation "accuracy" or "loss" (negated) with generated weights
    combine: str = ""              # "synflow": rank by the mean of the GHN's and the synflow proxy's ranks
    # The last stage (0: none): the `finalists` best of the adaptive ranking scored again by the GHN in
    # `finalist_skeleton` (settings over its own) on `finalist_images`, then ranked among themselves by the
    # rank mean of the record fields `finalist_rank` ("score", "finalist_score", "params", "synflow")
    finalists: int = 0
    finalist_skeleton: Optional[dict[str, int]] = None
    finalist_images: int = 500
    finalist_rank: tuple[str, ...] = ("score", "finalist_score", "params")
    seed: int = 0
    data_dir: Optional[str] = None

    def __post_init__(self):
        for name in ("num_archs", "val_images", "min_final", "archs_per_batch"):
            require_int("search", name, getattr(self, name), 1)
        for name in ("min_images", "finetune_steps"):
            require_int("search", name, getattr(self, name), 0)
        for name in ("num_nodes", "num_blocks", "channels", "cells_per_stage", "image_batch"):
            if getattr(self, name) is not None:
                require_int("search", name, getattr(self, name), 1)
        if self.signal is not None:
            check_signal(self.signal)
        require_int("search", "finalists", self.finalists, 0)
        require_int("search", "finalist_images", self.finalist_images, 1)
        object.__setattr__(self, "finalist_rank", tuple(self.finalist_rank))
        unknown = set(self.finalist_rank) - set(FINALIST_KEYS)
        if unknown or not self.finalist_rank:
            raise InputError(f"search finalist_rank takes fields among {', '.join(FINALIST_KEYS)}, got "
                             f"{list(self.finalist_rank)}")
        if "synflow" in self.finalist_rank and self.combine != "synflow":
            raise InputError("search finalist_rank uses synflow, which the records hold only with combine='synflow'")
        for name, value in (self.finalist_skeleton or {}).items():
            require_int("search", f"finalist_{name}", value, 1, 4096)  # named as its flag, --finalist-<name>
        require_int("search", "seed", self.seed, 0, MAX_SEED)
        require_number("search", "finetune_lr", self.finetune_lr, 0.0, 10.0, low_open=True)


def skeleton(cfg: SearchConfig) -> dict[str, Any]:
    """The search's network settings (None: the space's default)."""
    return {"num_nodes": cfg.num_nodes, "num_blocks": cfg.num_blocks, "channels": cfg.channels,
            "cells_per_stage": cfg.cells_per_stage}


def for_ghn(cfg: SearchConfig, ghn: GraphHyperNetwork) -> SearchConfig:
    """`cfg` with the settings it leaves open taken from how `ghn` scores (ghn.scoring)."""
    scoring = ghn.scoring
    given = {k: scoring.skeleton[k] for k, v in skeleton(cfg).items() if v is None and k in scoring.skeleton}
    return replace(cfg, **given, signal=cfg.signal or scoring.signal, image_batch=cfg.image_batch or scoring.image_batch)


def search_architectures(cfg: SearchConfig, space: str) -> list[ArchGraph]:
    """Architecture i of a search is drawn from a generator seeded by (seed, i): resumable, shardable."""
    sampler = get_space(space).sampler(**skeleton(cfg))
    return [sampler(random.Random(f"search:{cfg.seed}:{i}")) for i in range(cfg.num_archs)]


def describe(graph: ArchGraph) -> dict[str, Any]:
    """What a ranking records about an architecture besides its score: its text form and the parameters
    and FLOPs of the network it names (a NAS-Bench-201 cell's are the benchmark network's, whatever
    skeleton its GHN scores it in)."""
    spec = get_space(graph.space)
    counted = spec.counted(graph)
    return {"hash": graph.stable_hash(), "arch": spec.describe(graph), "params": count_params(counted),
            "flops": count_flops(counted)}


def halving_rounds(cfg: SearchConfig) -> list[tuple[int, int]]:
    """(images, candidates) of each round of adaptive evaluation: cfg.num_archs on cfg.min_images, then
    the best 1/eta (at least cfg.min_final) on eta times as many images, until a round reaches all
    cfg.val_images. Image counts are whole batches, so every batch's BatchNorm statistics are those
    of full evaluation; one round on all images when adaptive evaluation is off."""
    if cfg.eta < 2:
        raise InputError(f"adaptive evaluation keeps 1/eta of the candidates each round: eta must be >= 2, "
                         f"got {cfg.eta}")
    batch = cfg.image_batch or IMAGE_BATCH  # a GHN's own is only known to run_search (for_ghn)
    first = -(-cfg.min_images // batch) * batch
    if not cfg.min_images or first >= cfg.val_images or cfg.finetune_steps:
        return [(cfg.val_images, cfg.num_archs)]
    rounds, images, count = [], first, cfg.num_archs
    while images < cfg.val_images:
        rounds.append((images, count))
        images = min(cfg.val_images, images * cfg.eta)
        count = max(-(-count // cfg.eta), min(cfg.min_final, count))
    return rounds + [(cfg.val_images, count)]


def _read_scores(paths: Sequence[Path], usable: Callable[[int, dict[str, Any]], bool]) -> dict[int, dict[str, Any]]:
    """The records of the scores files by index, the last usable one of each index."""
    done: dict[int, dict[str, Any]] = {}
    for path in paths:
        for rec in read_records(path):
            try:
                index = int(rec["index"])
            except (KeyError, TypeError, ValueError, OverflowError):
                continue
            if usable(index, rec):
                done[index] = rec
    return done


def score_resumably(archs: Sequence[ArchGraph], score_chunk: Callable[[list[ArchGraph]], list[dict[str, Any]]],
                    out_dir: str | Path, archs_per_batch: int, key: str, desc: str, progress: bool = True,
                    ctx: Optional[DistContext] = None,
                    reusable: Callable[[dict[str, Any]], bool] = lambda rec: True,
                    indices: Optional[Sequence[int]] = None,
                    postfix: Callable[[], dict[str, str]] = dict) -> list[dict[str, Any]]:
    """The records of `archs`, best `key` first: `score_chunk` scores archs_per_batch architectures at a
    time (one record each, a `key` value among its fields); each record, with the architecture's index
    (`indices`, default its position in `archs`) and hash, is appended to a scores file in out_dir as
    soon as it exists, and a rerun only scores what no earlier run (on any number of ranks) recorded,
    among the records `reusable` accepts. Under torchrun the chunks are dealt to the ranks and every
    rank returns all the records. `postfix()` adds to the progress line."""
    ctx = ctx or DistContext()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    # scores.jsonl of a single process, scores.rank<r>.jsonl of rank r: each file has one writer
    scores_path = out / (f"scores.rank{ctx.rank}.jsonl" if ctx.distributed else "scores.jsonl")
    indices = list(range(len(archs))) if indices is None else list(indices)
    hashes = {i: g.stable_hash() for i, g in zip(indices, archs)}
    by_index = dict(zip(indices, archs))

    def usable(i: int, rec: dict[str, Any]) -> bool:
        # only records of these architectures (a folder reused with another seed or space would
        # otherwise rank stale ones), filtered before a later line of the same index replaces one
        return i in hashes and rec.get("hash") == hashes[i] and reusable(rec)

    # rank 0 reads them
    done = broadcast(_read_scores(sorted(out.glob("scores*.jsonl")), usable) if ctx.is_main else None, ctx)
    todo = [i for i in indices if i not in done]
    mine = deal([todo[k:k + archs_per_batch] for k in range(0, len(todo), archs_per_batch)], ctx)
    end_with_newline(scores_path)
    best = max((r[key] for r in done.values()), default=float("nan"))
    scored = []
    # one process counts the whole search; rank 0 of several counts its own share
    total, initial = (sum(map(len, mine)), 0) if ctx.distributed else (len(indices), len(indices) - len(todo))
    bar = progress_bar(total, initial, desc + (f" (rank 0 of {ctx.world_size})" if ctx.distributed else ""),
                       not (progress and ctx.is_main))
    with bar, scores_path.open("a") as log:
        for chunk in mine:
            for i, rec in zip(chunk, score_chunk([by_index[i] for i in chunk])):
                rec = {"index": i, "hash": hashes[i], **rec}
                scored.append(rec)
                log.write(json.dumps(rec) + "\n")
                best = rec[key] if math.isnan(best) else max(best, rec[key])
            log.flush()
            bar.set_postfix({f"best {key}": f"{best:.3f}", **postfix()})
            bar.update(len(chunk))
    done.update((rec["index"], rec) for rec in gather_lists(scored, ctx))
    return sorted((done[i] for i in indices), key=lambda r: (-r[key], r["index"]))


def run_search(ghn: GraphHyperNetwork, cfg: SearchConfig, out_dir: str | Path,
               progress: bool = True, ctx: Optional[DistContext] = None,
               watch: Optional[Stopwatch] = None) -> list[dict[str, Any]]:
    """Score cfg.num_archs random architectures (adaptively: :func:`halving_rounds`) and write
    out_dir/ranking.json (best first, with where the time went); under torchrun this rank scores its
    share and every rank returns the whole ranking. `watch` collects the time of each phase."""
    ctx = ctx or DistContext()
    watch = watch or Stopwatch()
    space = ghn.config.space
    cfg = for_ghn(cfg, ghn)
    with watch.phase("sample"):
        archs = search_architectures(cfg, space)
    device = next(ghn.parameters()).device
    with watch.phase("data"):
        splits = cifar10_splits(cfg.data_dir)
        val = splits.val.head(cfg.val_images)
        images = val.prepared(device)  # normalised once for every candidate
    ghn.eval()
    signal = "accuracy" if cfg.finetune_steps else cfg.signal  # GHN+SGD-k scores the trained accuracy
    check_signal(signal)
    scorer = scorer_digest(ghn, cfg.image_batch)

    def score_part(start: int, stop: int, earlier: dict[str, dict[str, Any]]):
        """Scores over images [start, stop) added to those over [0, start) in `earlier` (by hash)."""
        def carried(g: ArchGraph) -> float:
            return earlier[g.stable_hash()]["score"] * start if start else 0.0

        def score_chunk(chunk: list[ArchGraph]) -> list[dict[str, Any]]:
            with watch.phase("ghn"), torch.no_grad():
                weights = ghn(chunk)
            with watch.phase("evaluate"):
                if cfg.finetune_steps:  # one round: the trained accuracy on all images
                    scores = [train_briefly(g, splits.train, val, cfg.finetune_steps, cfg.finetune_lr,
                                            seed=cfg.seed, init=w, batch_stats=True, device=device)
                              for g, w in zip(chunk, weights)]
                else:
                    scores = [(carried(g) + network_score_sum(g, w, images.part(start, stop), signal,
                                                              cfg.image_batch, device)) / stop
                              for g, w in zip(chunk, weights)]
            records = []
            for g, score in zip(chunk, scores):
                if start:  # what the earlier round recorded, with the score over more images
                    rec = {k: v for k, v in earlier[g.stable_hash()].items() if k not in ("index", "combined")}
                else:
                    rec = {"finetune_steps": cfg.finetune_steps, "signal": signal, "scorer": scorer, **describe(g)}
                    if cfg.combine:  # on the network the architecture names (a NAS-Bench-201 cell: the benchmark's)
                        rec["synflow"] = synflow(get_space(space).counted(g))
                records.append({**rec, "images": stop, "score": score})
            return records
        return score_chunk

    def reusable(images: int):
        # a record without finetune_steps predates GHN+SGD-k, one without a signal the loss signal, one
        # without images the adaptive search (all of the search's images): plain accuracies; one without
        # a scorer cannot say which GHN made it and is scored again
        return lambda rec: (rec.get("scorer") == scorer and "stage" not in rec  # not a finalist's
                            and rec.get("finetune_steps", 0) == cfg.finetune_steps
                            and rec.get("signal", "accuracy") == signal
                            and rec.get("images", cfg.val_images) == images
                            and (not cfg.combine or "synflow" in rec))

    rounds = halving_rounds(cfg)
    contenders, earlier, start = list(range(len(archs))), {}, 0
    left_behind: list[dict[str, Any]] = []  # candidates each round did not keep, best of later rounds first
    for r, (stop, _) in enumerate(rounds):
        desc = (f"search {space}" if len(rounds) == 1 else
                f"search {space} round {r + 1}/{len(rounds)} ({stop} images)")
        scored = score_resumably([archs[i] for i in contenders], score_part(start, stop, earlier), out_dir,
                                 cfg.archs_per_batch, "score", desc, progress, ctx, reusable(stop), contenders,
                                 postfix=lambda: {"cpu": f"{watch.cpu_share():.0%}"})
        with watch.phase("rank"):
            scored = combined_ranking(scored) if cfg.combine else scored
        keep = rounds[r + 1][1] if r + 1 < len(rounds) else len(scored)
        left_behind = scored[keep:] + left_behind
        contenders = [rec["index"] for rec in scored[:keep]]
        earlier = {rec["hash"]: rec for rec in scored[:keep]}
        start = stop
    ranking = scored[:keep] + left_behind
    stages = [{"stage": "GHN", "rounds": rounds, "signal": signal, "skeleton": get_space(space).skeleton(**skeleton(cfg))}]
    if cfg.finalists:
        ranking = finalist_stage(ghn, cfg, archs, ranking, out_dir, progress, ctx, watch)
        stages.append({"stage": "finalists", "count": min(cfg.finalists, len(ranking)), "images": cfg.finalist_images,
                       "skeleton": get_space(space).skeleton(**{**skeleton(cfg), **(cfg.finalist_skeleton or {})}),
                       "ranked_by": "rank mean of " + ", ".join(cfg.finalist_rank)})
    if ctx.is_main:
        write_json_atomic({"space": space, "config": asdict(cfg), "rounds": rounds, "stages": stages,
                           "pick": stages[-1]["stage"], "timing": watch.report(), "ranking": ranking},
                          Path(out_dir) / "ranking.json")
    return ranking


def finalist_stage(ghn: GraphHyperNetwork, cfg: SearchConfig, archs: Sequence[ArchGraph],
                   ranking: list[dict[str, Any]], out_dir: str | Path, progress: bool, ctx: DistContext,
                   watch: Stopwatch) -> list[dict[str, Any]]:
    """The ranking with its best cfg.finalists re-ranked among themselves (each gains "finalist_score",
    its score in cfg.finalist_skeleton, and "final", the rank mean of its cfg.finalist_rank fields), the
    others after them as they were. Finalist scores are appended to the scores file: a rerun reuses them."""
    top = ranking[:cfg.finalists]
    split = validation_images(cfg.finalist_images, cfg.data_dir)
    where = get_space(ghn.config.space).skeleton(**{**skeleton(cfg), **(cfg.finalist_skeleton or {})})
    key = {"stage": "finalists", "skeleton": where, "images": len(split.labels), "scorer": scorer_digest(ghn, cfg.image_batch)}

    def score_chunk(chunk: list[ArchGraph]) -> list[dict[str, Any]]:
        with watch.phase("finalists"):
            values = ghn.score(chunk, split, skeleton=where, archs_per_batch=cfg.archs_per_batch)
        return [{**key, "finalist_score": v} for v in values]

    indices = [r["index"] for r in top]
    scored = score_resumably([archs[i] for i in indices], score_chunk, out_dir, cfg.archs_per_batch, "finalist_score",
                             f"finalists ({len(top)}, {where})", progress, ctx,
                             lambda rec: {k: rec.get(k) for k in key} == key, indices)
    by_index = {r["index"]: r["finalist_score"] for r in scored}
    finalists = [{**r, "finalist_score": by_index[r["index"]]} for r in top]
    final = rank_mean(*([r[k] for r in finalists] for k in cfg.finalist_rank))
    finalists = [{**r, "final": float(f)} for r, f in zip(finalists, final)]
    return sorted(finalists, key=lambda r: (-r["final"], r["index"])) + ranking[cfg.finalists:]


def combined_ranking(ranking: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The records re-ranked by the mean of their GHN score's and synflow's ranks (each record gains it as
    "combined"), best first."""
    combined = rank_mean([r["score"] for r in ranking], [r["synflow"] for r in ranking])
    out = [{**r, "combined": float(c)} for r, c in zip(ranking, combined)]
    return sorted(out, key=lambda r: (-r["combined"], r["index"]))


def arch_from_record(rec: dict[str, Any], space: str, cfg: SearchConfig) -> ArchGraph:
    """Rebuild a ranked architecture (at the search's macro configuration)."""
    return get_space(space).from_description(rec["arch"], **skeleton(cfg))


def top_best(ranking: Sequence[dict[str, Any]], space: str, cfg: SearchConfig, out_dir: str | Path,
             top: int = 10, steps: int = 200, progress: bool = True) -> dict[str, Any]:
    """Train the `top` best-ranked architectures briefly with SGD and pick the best (Top-best)."""
    splits = cifar10_splits(cfg.data_dir)
    val = splits.val.head(cfg.val_images)
    results = []
    path = Path(out_dir) / "top_best.json"
    previous = json.loads(path.read_text())["trained"] if path.exists() else []
    finished = {r["hash"]: r for r in previous if r.get("trained_steps") == steps}
    with progress_bar(min(top, len(ranking)), desc="top-best", disable=not progress) as bar:
        for rec in ranking[:top]:
            if rec["hash"] in finished:
                results.append(finished[rec["hash"]])
            else:
                acc = train_briefly(arch_from_record(rec, space, cfg), splits.train, val, steps, seed=cfg.seed)
                results.append({**rec, "trained_steps": steps, "trained_val_acc": acc})
                write_json_atomic({"trained": results}, path)
            bar.set_postfix(best=f"{max(r['trained_val_acc'] for r in results):.3f}")
            bar.update(1)
    best = max(results, key=lambda r: r["trained_val_acc"])
    write_json_atomic({"trained": results, "best": best}, path)
    return best


__all__ = ["SearchConfig", "run_search", "halving_rounds", "score_resumably", "top_best", "search_architectures",
           "arch_from_record", "describe"]
