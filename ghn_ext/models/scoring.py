"""How a GHN scores architectures: the signal it ranks them by, the skeleton it scores them in, the
BatchNorm batch, and the one scoring path every caller shares (:func:`score`, also
:meth:`GraphHyperNetwork.score <ghn_ext.models.ghn.GraphHyperNetwork.score>`, ``ghn_ext.score``,
``ghn score``, ``ghn search``, ``ghn correlate``).

A GHN's :class:`ScoringConfig` is saved in its checkpoint when it is trained; one written before this was
recorded gets what its space's spec and its training settings say (the behaviour of the time).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Optional, Sequence

import torch
import torch.nn.functional as F

from ghn_ext.core.checks import InputError, require_int
from ghn_ext.core.data import Split, cifar10_splits, network_input
from ghn_ext.core.files import content_digest
from ghn_ext.core.graph import ArchGraph
from ghn_ext.core.progress import progress_bar
from ghn_ext.nets.network import run_network
from ghn_ext.spaces.reading import parse_architecture
from ghn_ext.spaces.spec import get_space, is_registered

if TYPE_CHECKING:
    from ghn_ext.models.ghn import GraphHyperNetwork

IMAGE_BATCH = 100  # images per forward pass, and so per BatchNorm statistics: part of what a score means


@torch.inference_mode()  # the decorator, not a with-block: grad mode switches back at every yield
def network_logits(graph: ArchGraph, weights, split: Split, image_batch: int = IMAGE_BATCH,
                   device: str | torch.device = "cpu", norm_stats=None):
    """(logits, labels) of `graph` with `weights`, batch by batch over `split` (the last exit's logits
    for an anytime network). Without `norm_stats` BatchNorm uses each batch's statistics, as when the
    GHN was trained, so batches should be large enough to estimate them (>= 100); with them (a trained
    ArchNetwork's running statistics) it runs in eval mode."""
    for start in range(0, len(split.labels), image_batch):
        x = network_input(split.images[start:start + image_batch], device)
        y = split.labels[start:start + image_batch].to(device)
        logits = run_network(graph, x, weights, norm_stats, training=norm_stats is None,
                             check_weights=start == 0)
        yield (logits[-1] if isinstance(logits, list) else logits), y


def network_accuracy(graph: ArchGraph, weights, split: Split, image_batch: int = IMAGE_BATCH,
                     device: str | torch.device = "cpu", norm_stats=None) -> float:
    """Top-1 accuracy of `graph` on `split` with `weights` (BatchNorm as in :func:`network_logits`)."""
    correct = sum(int((logits.argmax(1) == y).sum())
                  for logits, y in network_logits(graph, weights, split, image_batch, device, norm_stats))
    return correct / max(1, len(split.labels))


# What a GHN's score of an architecture is: its validation accuracy with generated weights (the paper's),
# or its validation loss, negated so that higher is better for both. The loss is a finer signal: on
# NAS-Bench-201 it ranks cells clearly better than the accuracy does (bench/RESULTS.md).
SIGNALS = ("accuracy", "loss")
DEFAULT_IMAGES = 5000  # validation images an architecture is scored on unless told: the whole held-out split


def check_signal(signal: str) -> None:
    if signal not in SIGNALS:
        raise InputError(f"unknown scoring signal {signal!r}; choose one of {', '.join(SIGNALS)}")


def network_score_sum(graph: ArchGraph, weights, split: Split, signal: str = "accuracy",
                      image_batch: int = IMAGE_BATCH, device: str | torch.device = "cpu") -> float:
    """The `signal` summed over the images of `split`: correct predictions, or the negated cross-entropy
    (BatchNorm as in :func:`network_logits`). A sum, so that scores over consecutive parts of a
    validation set add up to the score over all of it (adaptive search scores in parts)."""
    check_signal(signal)
    # Summed on the device and read once: a read per batch would make a GPU wait for Python every batch.
    # Each batch's float32 sum is added in float64, as Python floats would.
    total = torch.zeros((), dtype=torch.float64, device=device)
    for logits, y in network_logits(graph, weights, split, image_batch, device):
        total += ((logits.argmax(1) == y).sum() if signal == "accuracy"
                  else -F.cross_entropy(logits, y, reduction="sum")).double()
    return float(total)


@torch.inference_mode()
def scorer_digest(ghn: GraphHyperNetwork, image_batch: int) -> str:
    """What a score depends on besides the architecture, the signal and the images: the GHN's parameters
    and configuration and the BatchNorm batch. Cached scores carry it, so that a rerun with another GHN
    or batch rescores instead of reusing scores it did not compute."""
    return content_digest([asdict(ghn.config), image_batch, ghn.state_dict()])[:16]


def score_architectures(ghn: GraphHyperNetwork, archs: Sequence[ArchGraph], split: Split,
                        image_batch: int = IMAGE_BATCH, signal: str = "accuracy") -> list[float]:
    """The `signal` score of each architecture (mean over `split`) with weights generated for all of
    them in one batch."""
    check_signal(signal)
    device = next(ghn.parameters()).device
    weights = ghn(list(archs))
    return [network_score_sum(g, w, split, signal, image_batch, device) / max(1, len(split.labels))
            for g, w in zip(archs, weights)]




@dataclass(frozen=True)
class ScoringConfig:
    """How a GHN scores an architecture: the `signal` (validation "accuracy" or negated "loss" with generated
    weights), the `skeleton` settings of the network it places a cell in (those of its space), and the
    `image_batch` that BatchNorm takes its statistics over."""
    signal: str = "accuracy"
    skeleton: dict[str, Any] = field(default_factory=dict)
    image_batch: int = IMAGE_BATCH

    def __post_init__(self):
        check_signal(self.signal)
        require_int("scoring", "image_batch", self.image_batch, 1, 100_000)
        if not isinstance(self.skeleton, dict):
            raise InputError(f"scoring skeleton must be a mapping of settings, got {type(self.skeleton).__name__}")
        for name, value in self.skeleton.items():
            require_int("scoring skeleton", str(name), value, 1, 4096)

    @classmethod
    def for_space(cls, space: str, trained: Optional[dict[str, Any]] = None) -> "ScoringConfig":
        """What a GHN of `space` trained with the settings `trained` (a TrainConfig as a dict; None when
        unknown) scores with: its space's signal and scoring skeleton (ghn_ext.spaces.spec)."""
        if not is_registered(space):  # a GHN of custom graphs: as given, by accuracy
            return cls()
        spec = get_space(space)
        return cls(spec.signal, spec.scoring_skeleton(trained))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Any) -> "ScoringConfig":
        if not isinstance(d, dict) or set(d) - {"signal", "skeleton", "image_batch"}:
            raise InputError(f"scoring settings must be a mapping of signal, skeleton and image_batch, got {d!r}")
        return cls(**d)


def placed(ghn: "GraphHyperNetwork", archs: Sequence[Any], skeleton: Optional[dict[str, Any]] = None
           ) -> list[ArchGraph]:
    """The networks `ghn` scores for `archs`: text in its space's format built in its scoring skeleton
    (or `skeleton`'s settings over it), architecture graphs placed there as the space says (a
    NAS-Bench-201 cell is rebuilt in the skeleton the GHN was trained in; other spaces' graphs are
    scored as given)."""
    space = ghn.config.space
    where = {**ghn.scoring.skeleton, **{k: v for k, v in (skeleton or {}).items() if v is not None}}
    out = []
    for i, arch in enumerate(archs):
        if isinstance(arch, str):
            out.append(parse_architecture(arch, space, **where))
        elif isinstance(arch, ArchGraph):
            ghn.check_space(arch)
            out.append(get_space(space).place(arch, **where) if arch.space == space else arch)
        else:
            raise InputError(f"architecture {i} is a {type(arch).__name__}; give cell strings of the space's "
                             "text format or ArchGraphs")
    return out


def validation_images(images: "int | Split | None" = None, data_dir: Optional[str] = None) -> Split:
    """What a score is a mean over: `images` as given (a Split), or the first `images` (default
    DEFAULT_IMAGES) of CIFAR-10's held-out validation split read from `data_dir` ($GHN_DATA_DIR)."""
    if isinstance(images, Split):
        return images
    if images is not None:
        require_int("scoring", "images", images, 1)
    val = cifar10_splits(data_dir).val
    n = DEFAULT_IMAGES if images is None else images
    if n > len(val.labels):
        raise InputError(f"scoring asks for {n} validation images; the validation split holds {len(val.labels)}")
    return val.head(n)


def score(ghn: "GraphHyperNetwork", archs: Sequence[Any], images: "int | Split | None" = None, *,
          signal: Optional[str] = None, skeleton: Optional[dict[str, Any]] = None, data_dir: Optional[str] = None,
          archs_per_batch: int = 4, progress: bool = False,
          on_scored: Optional[Callable[[int, ArchGraph, float], None]] = None) -> list[float]:
    """The score of each architecture, in order, higher is better: its `signal` (default: the GHN's) with
    weights `ghn` generates, the mean over `images` (see :func:`validation_images`), each cell in the
    GHN's scoring skeleton (`skeleton` overrides settings of it). Weights are generated for
    `archs_per_batch` architectures at a time; `on_scored(i, network, score)` is called as each is scored."""
    require_int("scoring", "archs_per_batch", archs_per_batch, 1)
    signal = signal or ghn.scoring.signal
    check_signal(signal)
    graphs = placed(ghn, archs, skeleton)
    split = validation_images(images, data_dir)
    device = next(ghn.parameters()).device
    split = split.prepared(device)  # normalised once for every architecture
    was_training = ghn.training
    ghn.eval()
    scores: list[float] = []
    try:
        with progress_bar(len(graphs), desc=f"score {ghn.config.space}", disable=not progress) as bar:
            for start in range(0, len(graphs), archs_per_batch):
                chunk = graphs[start:start + archs_per_batch]
                with torch.no_grad():
                    chunk_scores = score_architectures(ghn, chunk, split, ghn.scoring.image_batch, signal)
                for k, (g, value) in enumerate(zip(chunk, chunk_scores)):
                    scores.append(value)
                    if on_scored:
                        on_scored(start + k, g, value)
                bar.update(len(chunk))
                bar.set_postfix(best=f"{max(scores):.4f}")
    finally:
        ghn.train(was_training)
    return scores
