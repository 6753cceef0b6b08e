"""Ground truth for the correlation benchmark: random architectures trained with SGD (paper Sec. 5.1.2).

The paper trains 100 random N=17 architectures for 50 epochs on a GPU. These 2-core machines run a
reduced protocol (:class:`Protocol`): small networks (4 cells, 8 initial channels), one epoch of SGD
over the first 10,000 training images, accuracy on the first 2,000 validation images: a step of
an N=17 network costs about half a second here, so an architecture takes one to two minutes. Architecture i is drawn from
a generator seeded by ("groundtruth", seed, i), a stream no GHN training or search uses. With
``repeats`` > 1 each architecture is trained that many times (SGD seeds seed, seed+1, ...) and its
accuracy is their mean: a ground truth less noisy than any single run, which is what caps the
correlation a predictor can show.

Results live in one JSON file: the protocol and, keyed by architecture hash, each architecture's
index, cell, validation accuracy and training time. It is rewritten atomically after every
architecture, so a killed run loses at most the architecture in progress and a rerun (with a larger
``num_archs`` to grow the set) continues where it stopped. Several processes may grow one file at once,
each training its shard of the architectures: every write re-reads the file under a lock and adds to
it. A file written under another protocol is refused, never mixed with.
"""
from __future__ import annotations

import json
import random
import statistics
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Optional

from ghn_ext.core.data import Split, cifar10_splits
from ghn_ext.core.graph import ArchGraph
from ghn_ext.core.checks import InputError, require_int, require_training_recipe
from ghn_ext.core.files import file_lock, run_file, write_json_atomic
from ghn_ext.core.progress import progress_bar
from ghn_ext.workflows.search import describe
from ghn_ext.workflows.sgd import train_briefly
from ghn_ext.spaces import classification, make_sampler


@dataclass(frozen=True)
class Protocol:
    """How every ground-truth architecture is built and trained."""
    space: str = "classification"
    num_nodes: int = classification.EVAL_NODES  # nodes per cell (paper: N=17 for evaluation)
    num_blocks: int = 4          # cells per network (paper: 18)
    channels: int = 8            # initial width (paper: 32)
    cells_per_stage: int = 1     # NAS-Bench-201 skeleton
    train_images: int = 10_000   # first images of the training split
    epochs: int = 1              # SGD epochs over them (paper: 50 over all 45,000)
    batch_size: int = 64
    lr: float = 0.05             # SGD, momentum 0.9, cosine to zero, weight decay 3e-4
    val_images: int = 2_000      # first images of the validation split (paper: all 5,000)
    seed: int = 0                # draws the architectures and the first run's SGD
    repeats: int = 1             # SGD runs per architecture (seeds seed, seed+1, ...); accuracy: their mean

    def __post_init__(self):
        if not (isinstance(self.repeats, int) and self.repeats >= 1):
            raise InputError(f"a ground truth needs at least one SGD run per architecture, got repeats={self.repeats}")
        require_training_recipe("ground truth", self)
        for name in ("num_nodes", "num_blocks", "channels", "cells_per_stage"):
            require_int("ground truth", name, getattr(self, name), 1)

    @property
    def steps(self) -> int:
        return self.epochs * (self.train_images // self.batch_size)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Protocol":
        return cls(**{f.name: d[f.name] for f in fields(cls) if f.name in d})


def train_runs(graph: ArchGraph, protocol: Protocol, train: Split, val: Split) -> list[float]:
    """Validation accuracy of `graph` after each of the protocol's SGD runs (train/val: the protocol's heads)."""
    return [train_briefly(graph, train, val, protocol.steps, protocol.lr, protocol.batch_size, seed=protocol.seed + r)
            for r in range(protocol.repeats)]


def train_under_protocol(graph: ArchGraph, protocol: Protocol, train: Split, val: Split) -> float:
    """The ground-truth accuracy of `graph`: the mean over the protocol's SGD runs."""
    return statistics.fmean(train_runs(graph, protocol, train, val))


def record_accuracy(runs: list[float]) -> dict[str, Any]:
    """A record's accuracy fields: the mean, and each run's accuracy when there are several."""
    return {"val_acc": statistics.fmean(runs), **({"val_acc_runs": runs} if len(runs) > 1 else {})}


def groundtruth_architectures(protocol: Protocol, num_archs: int) -> list[ArchGraph]:
    sampler = make_sampler(protocol.space, protocol.num_nodes, protocol.num_blocks, protocol.channels,
                           protocol.cells_per_stage)
    return [sampler(random.Random(f"groundtruth:{protocol.seed}:{i}")) for i in range(num_archs)]


def load_groundtruth(path: str | Path) -> tuple[Protocol, list[dict[str, Any]]]:
    """The protocol and the finished records of a results file, in architecture order."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ground-truth file {path} does not exist (run `ghn groundtruth` first)")
    try:
        data = json.loads(path.read_text())
        protocol = Protocol.from_dict(data["protocol"])
        records = sorted(data["results"].values(), key=lambda r: r["index"])
    except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
        raise InputError(f"ground-truth file {path} is damaged or not a ground-truth file ({exc!r})") from None
    return protocol, records


def groundtruth_set(path: str | Path) -> tuple[Protocol, list[ArchGraph], list[dict[str, Any]]]:
    """The protocol, the trained architectures and their records (same order) of a results file."""
    protocol, records = load_groundtruth(path)
    if not records:
        raise InputError(f"ground-truth file {path} holds no trained architecture yet")
    every = groundtruth_architectures(protocol, max(r["index"] for r in records) + 1)
    archs = [every[r["index"]] for r in records]
    for g, r in zip(archs, records):
        if g.stable_hash() != r["hash"]:
            raise InputError(f"{path}: architecture {r['index']} is {r['hash']} in the file but this version "
                             f"samples {g.stable_hash()}; regenerate the ground truth")
    return protocol, archs, records


def _finished(path: Path, protocol: Protocol) -> dict[str, dict[str, Any]]:
    """The records `path` holds, by hash ({} when it does not exist yet); refuses another protocol."""
    if not path.exists():
        return {}
    existing, records = load_groundtruth(path)
    if existing != protocol:
        raise InputError(f"{path} was written under another protocol ({asdict(existing)}); "
                         f"use another file for {asdict(protocol)}")
    return {r["hash"]: r for r in records}


def run_groundtruth(protocol: Protocol, path: str | Path, num_archs: int, data_dir: Optional[str] = None,
                    progress: bool = True, shard: tuple[int, int] = (0, 1)) -> list[dict[str, Any]]:
    """Train architectures 0 .. num_archs-1 of the protocol that `path` does not hold yet; with
    ``shard=(r, n)`` only those with index % n == r, so n processes can share the work and the file."""
    path = Path(path)
    rank, world = shard
    with run_file(path, f"shard{rank}of{world}" if world > 1 else ""):
        return _fill_groundtruth(protocol, path, num_archs, data_dir, progress, rank, world)


def _fill_groundtruth(protocol: Protocol, path: Path, num_archs: int, data_dir: Optional[str], progress: bool,
                      rank: int, world: int) -> list[dict[str, Any]]:
    lock = file_lock(path)
    with lock:
        results = _finished(path, protocol)
        if not path.exists():  # the protocol first: a shard started under another one is refused at once
            write_json_atomic({"protocol": asdict(protocol), "results": {}}, path)
    archs = groundtruth_architectures(protocol, num_archs)
    mine = [i for i in range(num_archs) if i % world == rank]
    todo = [i for i in mine if archs[i].stable_hash() not in results]
    splits = cifar10_splits(data_dir)
    train, val = splits.train.head(protocol.train_images), splits.val.head(protocol.val_images)
    with progress_bar(len(mine), len(mine) - len(todo), "ground truth", not progress) as bar:
        for i in todo:
            start = time.perf_counter()
            acc = record_accuracy(train_runs(archs[i], protocol, train, val))
            rec = {"index": i, **describe(archs[i]), **acc, "train_seconds": round(time.perf_counter() - start, 2)}
            with lock:   # other shards may have added records since we last read the file
                results = _finished(path, protocol)
                results[rec["hash"]] = rec
                write_json_atomic({"protocol": asdict(protocol), "results": results}, path)
            bar.set_postfix(last=f"{acc['val_acc']:.3f}")
            bar.update(1)
    return sorted(results.values(), key=lambda r: r["index"])


__all__ = ["Protocol", "train_runs", "train_under_protocol", "record_accuracy", "groundtruth_architectures",
           "load_groundtruth", "groundtruth_set", "run_groundtruth"]
