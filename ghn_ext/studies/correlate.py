"""How well cheap predictors rank architectures against the SGD ground truth (paper Table 4, Fig. 6).

Predictors score the ground-truth architectures (`ghn groundtruth`) on the same validation images:
  * a trained GHN: accuracy with generated weights;
  * SGD for k steps from scratch (the protocol's optimiser and data, only shorter);
  * a one-shot weight-sharing model (ghn_ext.models.oneshot): accuracy with the shared weights;
  * GHN+SGD-k, not in the paper: a GHN's generated weights (or the one-shot model's) trained k more
    steps of that recipe, then scored.
Each is compared with the ground truth by Pearson R over all architectures and over the top half (those
with above-average ground truth), Spearman's rho and Kendall's tau, next to its cost: the initial cost
(training the GHN or the one-shot model) and the cost per architecture. Both Pearson R come with their
95% interval: over the few architectures of a ground truth (the top half of 50 is about 25), an R
is known to within about +-0.3, and the table should say so.

Predictions are cached in one JSON file per output folder, rewritten atomically after every
architecture, so an interrupted run resumes, a rerun with more predictors only computes the new ones,
and several processes can fill one folder at once.
"""
from __future__ import annotations

import json
import math
import time
from statistics import NormalDist
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch

from ghn_ext.core.data import Split
from ghn_ext.workflows.evaluate import score_architectures
from ghn_ext.core.graph import ArchGraph
from ghn_ext.studies.groundtruth import Protocol
from ghn_ext.core.files import content_digest, file_lock, write_json_atomic
from ghn_ext.core.progress import progress_bar
from ghn_ext.workflows.sgd import train_briefly
from ghn_ext.workflows.train import training_seconds
from ghn_ext.core.checks import InputError


@dataclass
class Predictor:
    """A named way to score architectures: `score(arch) -> accuracy`, after `initial_seconds` of setup.
    With `batch` > 1, `score_many(archs) -> scores` takes that many at a time (a GHN generates the
    weights of several architectures in one pass)."""
    name: str
    score: Callable[[ArchGraph], float]
    initial_seconds: float = 0.0
    batch: int = 1
    score_many: Optional[Callable[[list[ArchGraph]], list[float]]] = None
    kind: str = ""  # "ghn" for a GHN's generated weights
    source: str = ""  # what its scores depend on besides its name (a model's digest): a cache checks it

    def score_chunk(self, archs: list[ArchGraph]) -> list[float]:
        return self.score_many(archs) if self.score_many else [self.score(g) for g in archs]


def model_source(model: torch.nn.Module, *settings: Any) -> str:
    """A Predictor.source: the digest of a model's parameters and the settings it scores under."""
    return content_digest([model.state_dict(), *settings])[:16]


def model_predictor(name: str, model, val: Split, checkpoint: str | Path) -> Predictor:
    """Accuracy with a GHN's generated (or a one-shot model's shared) weights; the initial cost is the
    model's training time."""
    model.eval()
    return Predictor(name, lambda g: score_architectures(model, [g], val)[0], training_seconds(checkpoint),
                     source=model_source(model, len(val.labels)))


def _suffix(protocol: Protocol, batch_stats: bool, seed: Optional[int]) -> str:
    """Row-name suffix of an SGD run: how it is evaluated, and its seed where not the protocol's."""
    return ((" (batch stats)" if batch_stats else "")
            + (f", SGD seed {seed}" if seed is not None and seed != protocol.seed else ""))


def sgd_predictor(steps: int, protocol: Protocol, train: Split, val: Split, batch_stats: bool = False,
                  seed: Optional[int] = None) -> Predictor:
    """Accuracy after `steps` steps of the ground truth's own SGD recipe, from scratch; BatchNorm as
    in :func:`ghn_ext.workflows.search.train_briefly` (running statistics, or with `batch_stats` each batch's).
    `seed` (default: the protocol's) draws the initial weights and the order of the images."""
    return Predictor(f"SGD-{steps}{_suffix(protocol, batch_stats, seed)}",
                     lambda g: train_briefly(g, train, val, steps, protocol.lr, protocol.batch_size,
                                             seed=protocol.seed if seed is None else seed,
                                             batch_stats=batch_stats))


def finetuned_predictor(name: str, model, steps: int, protocol: Protocol, train: Split, val: Split,
                        checkpoint: str | Path, batch_stats: bool = False, seed: Optional[int] = None) -> Predictor:
    """NAME+SGD-k: the weights a GHN generates (or a one-shot model shares) for an architecture, trained
    `steps` more steps with the ground truth's SGD recipe, then their accuracy. Architectures that start
    from shared weights differ after a few steps by how they train, not by their random draws (a
    one-shot model's start serves as well as a GHN's: bench/RESULTS.md); the initial cost is the
    model's training time. `seed` (default: the protocol's) draws the order of the images."""
    model.eval()

    def score(g: ArchGraph) -> float:
        with torch.no_grad():
            init = model(g)
        return train_briefly(g, train, val, steps, protocol.lr, protocol.batch_size,
                             seed=protocol.seed if seed is None else seed, init=init, batch_stats=batch_stats)

    return Predictor(f"{name}+SGD-{steps}{_suffix(protocol, batch_stats, seed)}", score, training_seconds(checkpoint),
                     source=model_source(model, asdict(protocol)))


def top_half(true: np.ndarray) -> np.ndarray:
    """The architectures whose ground truth is above average (the paper's "top half")."""
    return true > true.mean()


def rank_correlations(predicted: Sequence[float], true: Sequence[float]) -> dict[str, float]:
    """Pearson R (all, and top half: above-average ground truth), Spearman rho, Kendall tau."""
    from scipy import stats

    p, t = np.asarray(predicted, dtype=float), np.asarray(true, dtype=float)
    if len(p) != len(t) or len(p) < 3:
        raise InputError(f"need at least 3 paired scores, got {len(p)} predicted and {len(t)} true")

    def pearson(a, b):  # undefined (nan) for constant input, e.g. a predictor stuck at chance
        return float(stats.pearsonr(a, b)[0]) if np.ptp(a) > 0 and np.ptp(b) > 0 else math.nan

    top = top_half(t)
    return {"pearson": pearson(p, t),
            "pearson_top": pearson(p[top], t[top]) if top.sum() >= 3 else math.nan,
            "spearman": float(stats.spearmanr(p, t)[0]) if np.ptp(p) > 0 else math.nan,
            "kendall": float(stats.kendalltau(p, t)[0]) if np.ptp(p) > 0 else math.nan}


def pearson_interval(r: float, n: int, level: float = 0.95) -> tuple[float, float]:
    """Confidence interval of a Pearson R over n pairs (Fisher z: atanh(R) is near normal with standard
    error 1/sqrt(n-3)); nan where R is undefined or n is too small."""
    if math.isnan(r) or n <= 3:
        return math.nan, math.nan
    z = math.atanh(min(max(r, -1 + 1e-12), 1 - 1e-12))  # a perfect R stays finite
    half = NormalDist().inv_cdf(0.5 + level / 2) / math.sqrt(n - 3)
    return math.tanh(z - half), math.tanh(z + half)


class PredictionCache:
    """out_dir/predictions.json: {predictor: {"initial_seconds", "scores": {hash: {"score", "seconds"}}}}.

    Several processes may fill one cache at once (e.g. one predictor each): every write re-reads the
    file under a lock and adds to it, so nothing another process scored meanwhile is lost."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._lock = file_lock(self.path)
        with self._lock:
            self.data = self._read()

    def _read(self) -> dict[str, Any]:
        if not self.path.exists():
            return {}
        try:
            data = json.loads(self.path.read_text())
            assert isinstance(data, dict)
        except (json.JSONDecodeError, AssertionError):
            raise InputError(f"prediction cache {self.path} is damaged; move it away to recompute") from None
        return data

    def _add(self, predictor: Predictor, scores: dict[str, Any]) -> dict[str, Any]:
        """Write `scores` into the predictor's entry of the file as it is now; returns that entry."""
        with self._lock:
            self.data = self._read()
            entry = self.data.setdefault(predictor.name, {"scores": {}})
            entry["initial_seconds"], entry["source"] = predictor.initial_seconds, predictor.source
            entry["scores"].update(scores)
            write_json_atomic(self.data, self.path)
        return entry

    def run(self, predictor: Predictor, archs: Sequence[ArchGraph], progress: bool = True) -> dict[str, Any]:
        entry = self.data.get(predictor.name, {"scores": {}, "source": predictor.source})
        if entry.get("source", "") != predictor.source:
            raise InputError(f"{self.path} holds scores of another {predictor.name!r} (another model or "
                             "setting, or written before caches recorded theirs); name this one differently "
                             "or use another output folder")
        todo = [g for g in archs if g.stable_hash() not in entry["scores"]]
        with progress_bar(len(archs), len(archs) - len(todo), predictor.name, not progress) as bar:
            for k in range(0, len(todo), predictor.batch):
                # else another process scored them meanwhile
                chunk = [g for g in todo[k:k + predictor.batch] if g.stable_hash() not in entry["scores"]]
                if chunk:
                    start = time.perf_counter()
                    scores = predictor.score_chunk(chunk)
                    seconds = (time.perf_counter() - start) / len(chunk)
                    entry = self._add(predictor, {g.stable_hash(): {"score": s, "seconds": seconds}
                                                  for g, s in zip(chunk, scores)})
                    bar.set_postfix(last=f"{scores[-1]:.3f}")
                bar.update(min(predictor.batch, len(todo) - k))
        return self._add(predictor, {})


def summarize(name: str, entry: dict[str, Any], records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One table row: correlations with the ground truth and costs."""
    scores = [entry["scores"][r["hash"]] for r in records]
    true = np.array([r["val_acc"] for r in records])
    corr = rank_correlations([s["score"] for s in scores], true)
    row = {"predictor": name, **corr,
           "pearson_ci": pearson_interval(corr["pearson"], len(true)),
           "pearson_top_ci": pearson_interval(corr["pearson_top"], int(top_half(true).sum())),
           "initial_hours": entry.get("initial_seconds", 0.0) / 3600,
           "seconds_per_arch": float(np.mean([s["seconds"] for s in scores]))}
    return row


def markdown_table(rows: Sequence[dict[str, Any]]) -> str:
    head = ("| predictor | Pearson R (95% interval) | R, top half (95% interval) | Spearman | Kendall tau | "
            "initial cost (h) | cost per architecture (s) |\n|---|---|---|---|---|---|---|\n")

    def with_interval(r: float, interval: Sequence[float]) -> str:
        return f"{r:.3f}" + ("" if math.isnan(interval[0]) else f" ({interval[0]:.2f}, {interval[1]:.2f})")

    return head + "".join(
        f"| {r['predictor']} | {with_interval(r['pearson'], r['pearson_ci'])} | "
        f"{with_interval(r['pearson_top'], r['pearson_top_ci'])} | {r['spearman']:.3f} | "
        f"{r['kendall']:.3f} | {r['initial_hours']:.3f} | {r['seconds_per_arch']:.2f} |\n" for r in rows)


def scatter_plot(entries: dict[str, dict[str, Any]], records: Sequence[dict[str, Any]], path: str | Path,
                 title: str = "", xlabel: str = "true accuracy (SGD)", measure: str = "pearson") -> Path:
    """Predicted against true accuracy, one panel per predictor (paper Fig. 6), five panels a row, each
    titled with its `measure` of :func:`rank_correlations`."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    true = [r["val_acc"] for r in records]
    cols = min(len(entries), 5)
    rows = math.ceil(len(entries) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.2 * rows), squeeze=False)
    for ax in axes.flat[len(entries):]:
        ax.set_visible(False)
    for ax, (name, entry) in zip(axes.flat, entries.items()):
        pred = [entry["scores"][r["hash"]]["score"] for r in records]
        ax.scatter(true, pred, s=10)
        r = rank_correlations(pred, true)[measure]
        symbol = {"pearson": "R", "spearman": "rho", "kendall": "tau"}.get(measure, measure)
        ax.set_title(f"{name}\n{symbol} = {r:.2f}", fontsize=8)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("predicted accuracy or score")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.3 / fig.get_figheight()) if title else None)  # room for the title
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def correlate(predictors: Sequence[Predictor], archs: Sequence[ArchGraph], records: Sequence[dict[str, Any]],
              out_dir: str | Path, progress: bool = True, title: Optional[str] = None) -> list[dict[str, Any]]:
    """Run (or resume) every predictor on `archs`, write table.md, table.json and scatter.png. The
    table also keeps the predictors an earlier run in out_dir scored on all of `archs` (a GHN whose
    checkpoint is gone still has its row), after the ones run now."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cache = PredictionCache(out / "predictions.json")
    entries = {p.name: cache.run(p, archs, progress) for p in predictors}
    hashes = {g.stable_hash() for g in archs}
    entries.update((name, entry) for name, entry in cache.data.items()
                   if name not in entries and hashes <= entry.get("scores", {}).keys())
    if not entries:
        raise InputError(f"nothing to tabulate: no predictor given and none in {cache.path} scored every architecture")
    rows = [summarize(name, entry, records) for name, entry in entries.items()]
    (out / "table.md").write_text(markdown_table(rows))
    write_json_atomic(rows, out / "table.json")
    scatter_plot(entries, records, out / "scatter.png", title or "")
    return rows


__all__ = ["Predictor", "model_predictor", "sgd_predictor", "finetuned_predictor", "training_seconds",
           "top_half", "rank_correlations", "pearson_interval", "PredictionCache", "summarize", "markdown_table", "scatter_plot", "correlate"]
