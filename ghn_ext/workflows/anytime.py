"""Anytime search and its baseline (paper Sec. 5.2, appendix 7.3).

- :func:`score_anytime` ranks anytime networks by the area under their accuracy-FLOPs curve with
  GHN-generated weights (the search criterion), over a FLOPs range fixed for all of them.
- :func:`msdnet_graph` is an MSDNet-style baseline (Huang et al. 2018) written in the same graph
  language: layers of nodes at three scales, each node densely reading every earlier node of its
  scale plus the latest node one scale finer, concatenated and bottlenecked like the anytime space's
  nodes; exits on the coarsest scale. (MSDNet downsamples with strided convolutions; here the finer
  input is average-pooled into the bottleneck, so both networks are built from the same node type.)
- :func:`match_width` picks the base width of an anytime genotype whose FLOPs match a budget.
- :func:`train_anytime` is the final training recipe: SGD momentum 0.9, lr 0.1 divided by 10 at 50%
  and 75% of the epochs, batch 64, every exit's cross-entropy averaged; with a checkpoint path it saves
  atomically every epoch and a rerun continues where it stopped (same batches, same optimiser state).

The two steps of the experiment, as `ghn anytime search` and `ghn anytime train-final` run them (the CLI
only parses their options into these configs and prints what they return):

- :func:`run_anytime_search` (:class:`AnytimeSearchConfig`) scores random full-size anytime networks
  with a GHN, resumably, and writes ranking.json, best area first (:func:`rank_by_area`);
- :func:`train_final_anytime` (:class:`AnytimeFinalConfig`) trains a ranked network at the width that
  matches the baseline's FLOPs, and the baseline, with :func:`train_anytime`; result.json, curves.png.

Both take areas over :meth:`AnytimeBaselineConfig.area_range`: the stated FLOPs range, by default zero
to the total FLOPs of the baseline (:meth:`AnytimeBaselineConfig.baseline`).
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Optional, Sequence

import torch
import torch.nn.functional as F

from ghn_ext.core.checks import InputError, MAX_SEED, require_int, require_training_recipe
from ghn_ext.core.data import Split, TensorLoader, cifar10_splits
from ghn_ext.core.distributed import DistContext
from ghn_ext.core.files import write_json_atomic
from ghn_ext.workflows.evaluate import IMAGE_BATCH, curve_area, exit_accuracies, plot_curves, scorer_digest
from ghn_ext.workflows.search import SearchConfig, score_resumably, search_architectures
from ghn_ext.core.checkpoints import CheckpointError, resume_state, resuming_from, save_state
from ghn_ext.models.ghn import GraphHyperNetwork
from ghn_ext.core.graph import ArchGraph, Node
from ghn_ext.nets.anytime import AnytimeNetwork, exit_schedule
from ghn_ext.nets.network import count_flops
from ghn_ext.core.progress import progress_bar
from ghn_ext.spaces import anytime, get_space


@torch.no_grad()
def score_anytime(ghn: GraphHyperNetwork, archs: Sequence[ArchGraph], split: Split,
                  flops_range: tuple[float, float], image_batch: int = IMAGE_BATCH) -> list[dict[str, Any]]:
    """Per architecture: its exits' cumulative FLOPs, their accuracies with generated weights on
    `split`, and the normalised area under that curve over `flops_range`."""
    device = next(ghn.parameters()).device
    out = []
    for g, w in zip(archs, ghn(list(archs))):
        schedule = exit_schedule(g)
        flops = [e.flops for e in schedule]
        accs = exit_accuracies(g, w, split, schedule, image_batch, device)
        out.append({"hash": g.stable_hash(), "exit_flops": flops, "exit_acc": accs,
                    "area": curve_area(flops, accs, *flops_range)})
    return out


BASELINE_LAYERS = 10     # the MSDNet-style baseline's defaults (appendix 7.3)
BASELINE_EXIT_EVERY = 2


def msdnet_graph(layers: int = BASELINE_LAYERS, channels: int = anytime.CHANNELS,
                 exit_every: int = BASELINE_EXIT_EVERY, scales: Sequence[int] = (32, 16, 8),
                 num_classes: int = anytime.NUM_CLASSES) -> ArchGraph:
    """The MSDNet-style baseline: `layers` layers of one 3x3-conv node per scale (widths as in the
    anytime space), an exit on the coarsest node of every `exit_every`-th layer and of the last."""
    if layers < 1 or exit_every < 1 or channels < 1:
        raise InputError(f"layers, exit_every and channels must be positive, got {layers}, {exit_every}, "
                         f"{channels}")
    nodes = [Node("input", 0, 3), Node("stem_conv", 0, channels)]
    edges: list[tuple[int, int]] = [(0, 1)]
    same_scale: dict[int, list[int]] = {s: [] for s in scales}   # earlier nodes per scale
    for layer in range(layers):
        exit_here = (layer + 1) % exit_every == 0 or layer == layers - 1
        finer = 1  # the stem feeds the finest scale of the first layer
        for k, s in enumerate(scales):
            v = len(nodes)
            ins = same_scale[s] + ([finer] if layer == 0 or k > 0 else [])
            exit_node = exit_here and k == len(scales) - 1
            nodes.append(Node("conv3x3", 1, anytime.width(channels, s), scale=s, exit=exit_node))
            edges += [(u, v) for u in ins]
            same_scale[s].append(v)
            finer = v
            if exit_node:
                nodes.append(Node("classifier", 1, num_classes))
                edges.append((v, len(nodes) - 1))
    meta = {"baseline": "msdnet", "layers": layers, "channels": channels, "exit_every": exit_every,
            "scales": list(scales)}
    return ArchGraph(nodes, edges, "custom", meta).validate()


def match_width(graph: ArchGraph, max_flops: float, input_size=(3, 32, 32)) -> ArchGraph:
    """`graph` (an anytime genotype) at the largest base width whose total FLOPs stay within
    `max_flops`; ValueError when even width 1 exceeds it."""
    def flops(c: int) -> int:
        return count_flops(anytime.with_channels(graph, c), input_size)

    if flops(1) > max_flops:
        raise InputError(f"even base width 1 needs {flops(1):,} FLOPs, over the budget of {max_flops:,.0f}")
    lo, hi = 1, 2
    while flops(hi) <= max_flops:
        lo, hi = hi, hi * 2
    while hi - lo > 1:  # FLOPs grow with the width
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if flops(mid) <= max_flops else (lo, mid)
    return anytime.with_channels(graph, lo)


@dataclass(frozen=True)
class AnytimeTrainConfig:
    epochs: int = 300            # the paper's (appendix 7.3); shorter by option
    batch_size: int = 64
    lr: float = 0.1              # divided by 10 at 50% and 75% of the epochs
    momentum: float = 0.9
    weight_decay: float = 1e-4
    train_images: Optional[int] = None
    seed: int = 0

    def __post_init__(self):
        require_training_recipe("anytime training", self)


CHECKPOINT_FORMAT = "ghn_ext.anytime_final/1"


def train_anytime(graph: ArchGraph, cfg: AnytimeTrainConfig, train: Split, test: Split,
                  progress: bool = False, checkpoint: Optional[str | Path] = None,
                  stop_after: Optional[int] = None) -> Optional[dict[str, Any]]:
    """Train an anytime network from scratch with every exit's loss; its exits' test accuracies, their
    cumulative FLOPs and the last training loss. With `checkpoint`, resume from that file when it holds
    this run and save to it every epoch and at the end; `stop_after` steps end the call early (as if
    killed there) and return None."""
    torch.manual_seed(cfg.seed)
    net = AnytimeNetwork(graph)
    train = train.head(cfg.train_images)
    loader = TensorLoader(train.images, train.labels, cfg.batch_size, shuffle=True, augment=True,
                          drop_last=True, seed=cfg.seed)
    steps = cfg.epochs * len(loader)  # >= 1: the config has epochs, the loader refuses to hold no batch
    opt = torch.optim.SGD(net.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, [steps // 2, (3 * steps) // 4], gamma=0.1)
    step, loss = 0, torch.tensor(math.nan)
    run = {"hash": graph.stable_hash(), "config": asdict(cfg)}

    def save() -> None:
        save_state({"format": CHECKPOINT_FORMAT, **run, "step": step, "loss": loss.item(),
                    "net": net.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                    "loader": loader.state_dict()}, checkpoint)

    state = resume_state(checkpoint, CHECKPOINT_FORMAT, "anytime-training") if checkpoint is not None else None
    if state is not None:
        if {k: state.get(k) for k in run} != run:
            raise CheckpointError(f"{checkpoint} holds another run (architecture or settings differ); "
                                  "use another output folder or the same settings")
        with resuming_from(Path(checkpoint)):  # a valid tag over damaged contents
            net.load_state_dict(state["net"])
            opt.load_state_dict(state["optimizer"])
            sched.load_state_dict(state["scheduler"])
            loader.load_state_dict(state["loader"])
            step, loss = int(state["step"]), torch.tensor(state["loss"])
    end = steps if stop_after is None else min(steps, step + stop_after)
    net.train()
    with progress_bar(total=steps, initial=step, desc=f"train {graph.stable_hash()}", disable=not progress) as bar:
        while step < end:
            x, y = loader.next_batch()
            loss = torch.stack([F.cross_entropy(o, y) for o in net(x)]).mean()
            if not torch.isfinite(loss):
                raise FloatingPointError(f"non-finite loss {loss.item()} while training {graph.stable_hash()}")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            bar.update(1)
            if checkpoint is not None and (step % len(loader) == 0 or step == steps):
                save()
    if step < steps:
        return None
    net.eval()
    accs = exit_accuracies(graph, net.node_weights(), test, net.schedule, norm_stats=net.norm_stats())
    return {"hash": graph.stable_hash(), "exit_flops": net.exit_flops, "exit_acc": accs,
            "final_loss": loss.item(), "steps": steps}


# ------------------------------------------------------------------------------ the experiment's two steps
@dataclass(frozen=True)
class AnytimeBaselineConfig:
    """What the search and the final training share: the base width, the MSDNet-style baseline, and the
    FLOPs range the areas are taken over (None: zero to the baseline's total FLOPs)."""
    channels: int = anytime.CHANNELS
    baseline_layers: int = BASELINE_LAYERS
    baseline_exit_every: int = BASELINE_EXIT_EVERY
    flops_range: Optional[tuple[float, float]] = None
    what: ClassVar[str] = "anytime baseline"  # names the config in its errors

    def __post_init__(self):
        for name in ("channels", "baseline_layers", "baseline_exit_every"):
            require_int(self.what, name, getattr(self, name), 1)
        if self.flops_range is not None and len(self.flops_range) != 2:
            raise InputError(f"{self.what} flops_range must be (lo, hi) in FLOPs, got {self.flops_range!r}")

    def baseline(self) -> ArchGraph:
        """The MSDNet-style baseline at this width (:func:`msdnet_graph`)."""
        return msdnet_graph(self.baseline_layers, self.channels, self.baseline_exit_every)

    def area_range(self, baseline: Optional[ArchGraph] = None) -> tuple[float, float]:
        """The FLOPs range of the areas: `flops_range`, else zero to the total FLOPs of `baseline`
        (default: :meth:`baseline`)."""
        if self.flops_range:
            lo, hi = self.flops_range
            return float(lo), float(hi)
        return 0.0, float(count_flops(self.baseline() if baseline is None else baseline))


@dataclass(frozen=True)
class AnytimeSearchConfig(AnytimeBaselineConfig):
    """`ghn anytime search`: `num_archs` full-size anytime networks at base width `channels`, the i-th
    drawn from (seed, i), scored `archs_per_batch` at a time on the first `val_images` validation images."""
    num_archs: int = 100
    val_images: int = 5000
    archs_per_batch: int = 4          # architectures whose weights are generated together
    image_batch: int = IMAGE_BATCH
    seed: int = 0
    data_dir: Optional[str] = None    # CIFAR-10 folder (None: $GHN_DATA_DIR)
    what: ClassVar[str] = "anytime search"

    def __post_init__(self):
        super().__post_init__()
        for name in ("num_archs", "val_images", "archs_per_batch", "image_batch"):
            require_int(self.what, name, getattr(self, name), 1)
        require_int(self.what, "seed", self.seed, 0, MAX_SEED)


def rank_by_area(records: Sequence[dict[str, Any]], flops_range: tuple[float, float]) -> list[dict[str, Any]]:
    """Scored records (with their exits' `exit_flops` and `exit_acc`), each with its `area` over
    `flops_range` taken from that curve, best area first (ties by `index`)."""
    return sorted(({**r, "area": curve_area(r["exit_flops"], r["exit_acc"], *flops_range)} for r in records),
                  key=lambda r: (-r["area"], r["index"]))


def run_anytime_search(ghn: GraphHyperNetwork, out_dir: str | Path,
                       cfg: AnytimeSearchConfig = AnytimeSearchConfig(), progress: bool = True,
                       ctx: Optional[DistContext] = None) -> list[dict[str, Any]]:
    """Rank cfg.num_archs random anytime networks by the area under their accuracy-FLOPs curve with
    `ghn`'s weights over :meth:`~AnytimeBaselineConfig.area_range`, and write out_dir/ranking.json
    ({"flops_range": [lo, hi], "ranking": [...]}, best first); the ranking is returned.

    Each record (index, hash, exit_flops, exit_acc, graph, images, scorer) is appended to
    out_dir/scores.jsonl as it is scored, so a rerun scores only what is not there (and again what
    another GHN or image count drew); the areas are taken from the recorded curves, so a rerun with
    another flops_range ranks by that range without scoring again. Under torchrun (`ctx`) the chunks are
    dealt to the ranks, every rank returns the whole ranking and rank 0 writes the file."""
    if not get_space(ghn.config.space).anytime:
        raise InputError(f"run_anytime_search needs a GHN of the anytime space, got one of {ghn.config.space!r}")
    ctx = ctx or DistContext()
    flops_range = cfg.area_range()
    # full-size networks, architecture i drawn from (seed, i): a rerun resumes from the scores file
    archs = search_architectures(SearchConfig(num_archs=cfg.num_archs, channels=cfg.channels, seed=cfg.seed),
                                 anytime.SPACE.name)
    out = Path(out_dir)
    ghn.eval()
    val = cifar10_splits(cfg.data_dir).val.head(cfg.val_images)
    scorer = scorer_digest(ghn, cfg.image_batch)

    def score_chunk(chunk: list[ArchGraph]) -> list[dict[str, Any]]:
        return [{**rec, "graph": g.to_dict(), "images": cfg.val_images, "scorer": scorer}
                for g, rec in zip(chunk, score_anytime(ghn, chunk, val, flops_range, cfg.image_batch))]

    def reusable(rec: dict[str, Any]) -> bool:  # only curves this GHN drew on these images
        return (rec.get("scorer"), rec.get("images")) == (scorer, cfg.val_images)

    records = score_resumably(archs, score_chunk, out, cfg.archs_per_batch, "area", "anytime search", progress,
                              ctx, reusable=reusable)
    # areas from the recorded curves, so that a rerun with another flops_range ranks by that range
    ranking = rank_by_area(records, flops_range)
    if ctx.is_main:
        write_json_atomic({"flops_range": list(flops_range), "ranking": ranking}, out / "ranking.json")
    return ranking


@dataclass(frozen=True)
class AnytimeFinalConfig(AnytimeBaselineConfig):
    """`ghn anytime train-final`: the `rank`-th network of a ranking (0: the best) at the largest width
    within the baseline's FLOPs (:func:`match_width`), and the baseline at width `channels`, both trained
    with `training` on the first train_images training images and tested on the first `test_images`
    test images (None: all)."""
    rank: int = 0
    test_images: Optional[int] = None
    training: AnytimeTrainConfig = field(default_factory=AnytimeTrainConfig)
    data_dir: Optional[str] = None    # CIFAR-10 folder (None: $GHN_DATA_DIR)
    what: ClassVar[str] = "anytime final training"

    def __post_init__(self):
        super().__post_init__()
        require_int(self.what, "rank", self.rank, 0)
        if self.test_images is not None:
            require_int(self.what, "test_images", self.test_images, 1)
        if not isinstance(self.training, AnytimeTrainConfig):
            raise InputError(f"{self.what} training must be an AnytimeTrainConfig, got {self.training!r}")


FINAL_NETWORKS = ("searched", "msdnet")  # the keys of train_final_anytime's results, in training order


def train_final_anytime(ranking_path: str | Path, out_dir: str | Path,
                        cfg: AnytimeFinalConfig = AnytimeFinalConfig(), progress: bool = True,
                        on_trained: Optional[Callable[[str, dict[str, Any]], None]] = None) -> dict[str, Any]:
    """Train the cfg.rank-th network of `ranking_path` (ranking.json of :func:`run_anytime_search`) at the
    width that matches the baseline's FLOPs, and the baseline, with the same recipe; write
    out_dir/result.json and plot both curves to out_dir/curves.png. Returns result.json's contents:
    flops_range, config (the training recipe), searched_graph, and per network ("searched", "msdnet")
    :func:`train_anytime`'s result with its `area` over the range and its base width `channels`.

    Each network trains with a checkpoint in out_dir (searched.pt, msdnet.pt), so a rerun resumes it, or
    only evaluates it again when it finished. `on_trained(name, result)` is called as each one is done."""
    path = Path(ranking_path)
    if not path.is_file():
        raise FileNotFoundError(f"ranking file {path} does not exist")
    ranking = json.loads(path.read_text())["ranking"]
    if not 0 <= cfg.rank < len(ranking):
        raise InputError(f"--rank {cfg.rank} is outside the ranking's {len(ranking)} architectures")
    baseline = cfg.baseline()
    arch = match_width(ArchGraph.from_dict(ranking[cfg.rank]["graph"]), count_flops(baseline))
    flops_range = cfg.area_range(baseline)
    splits = cifar10_splits(cfg.data_dir)
    test = splits.test.head(cfg.test_images)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    results = {}
    for name, graph in zip(FINAL_NETWORKS, (arch, baseline)):  # each resumes from its checkpoint
        res = train_anytime(graph, cfg.training, splits.train, test, progress=progress, checkpoint=out / f"{name}.pt")
        res["area"] = curve_area(res["exit_flops"], res["exit_acc"], *flops_range)
        res["channels"] = graph.nodes[1].channels
        results[name] = res
        if on_trained is not None:
            on_trained(name, res)
    result = {"flops_range": list(flops_range), "config": asdict(cfg.training), "searched_graph": arch.to_dict(),
              **results}
    write_json_atomic(result, out / "result.json")
    epochs = cfg.training.epochs
    plot_curves({k: (r["exit_flops"], r["exit_acc"]) for k, r in results.items()}, out / "curves.png",
                flops_range, title=f"CIFAR-10 anytime, {epochs} epoch{'s' * (epochs != 1)}")
    return result
