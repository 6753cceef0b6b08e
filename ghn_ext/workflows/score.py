"""Scoring architectures with a GHN from a training script or the command line (`ghn score`):

    import ghn_ext
    scores = ghn_ext.score(["|nor_conv_3x3~0|+|...|", ...], ghn="nb201")   # the shipped nb201 GHN

Both go through ghn_ext.models.scoring.score, with the GHN's own signal and skeleton. :func:`score_file`
adds what a long job needs: every score appended to a JSON-lines file as soon as it exists, so that an
interrupted run keeps what it scored and a rerun scores only the rest.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from ghn_ext.core.checkpoints import CheckpointError
from ghn_ext.core.data import Split
from ghn_ext.core.files import atomic_write, content_digest, end_with_newline, read_records
from ghn_ext.core.graph import ArchGraph
from ghn_ext.models.ghn import GraphHyperNetwork
from ghn_ext.models.pretrained import manifest, resolve_checkpoint
from ghn_ext.models.scoring import placed, score as score_with, scorer_digest, validation_images
from ghn_ext.spaces.reading import read_architectures
from ghn_ext.spaces.spec import get_space


def load_ghn(ghn: GraphHyperNetwork | str | Path | None = None, space: Optional[str] = None) -> GraphHyperNetwork:
    """A GHN as given, loaded from a file, or shipped with the package: `ghn` a GraphHyperNetwork, a
    checkpoint path, the name of a shipped GHN ("nb201", "classification"), or None for `space`'s shipped
    GHN. With `space`, a GHN of another space is refused."""
    if isinstance(ghn, GraphHyperNetwork):
        if space is not None and ghn.config.space != space:
            raise CheckpointError(f"the GHN given is for the {ghn.config.space!r} space, not {space!r}")
        return ghn
    if ghn is None:
        if space is None:
            raise CheckpointError("give a GHN (a checkpoint path or a shipped name) or the space to use the shipped one of")
        if space not in manifest():
            raise CheckpointError(f"no pretrained GHN ships for the {get_space(space).name!r} space; train one "
                                  "(`ghn train`, ghn_ext.train) and give its ghn.pt")
        ghn = space
    return GraphHyperNetwork.load(resolve_checkpoint(ghn), space=space)


def score(archs: Sequence[str | ArchGraph], ghn: GraphHyperNetwork | str | Path | None = None, *,
          space: Optional[str] = None, images: int | Split | None = None, signal: Optional[str] = None,
          skeleton: Optional[dict[str, Any]] = None, data_dir: Optional[str] = None, archs_per_batch: int = 4,
          progress: bool = False) -> list[float]:
    """The score of each architecture, in order, higher is better (what `ghn score` prints).

    archs: cell strings in the space's text format (a NAS-Bench-201 string, a classification cell as
        JSON) or ArchGraphs; a NAS-Bench-201 cell is scored in the skeleton its GHN was trained in.
    ghn: a GraphHyperNetwork, a checkpoint path or a shipped name; None: `space`'s shipped GHN.
    images: how many of CIFAR-10's 5,000 held-out validation images (default all), or a Split.
    signal, skeleton: the GHN's own (ghn.scoring) unless given.
    """
    model = load_ghn(ghn, space)
    return model.score(archs, images, signal=signal, skeleton=skeleton, data_dir=data_dir,
                       archs_per_batch=archs_per_batch, progress=progress)


def images_digest(split: Split) -> str:
    """Which images and labels a score was taken over (scores over other data are not reused)."""
    return content_digest([split.images, split.labels])[:16]


def score_file(ghn: GraphHyperNetwork, archs: str | Path | Sequence[str | ArchGraph], output: Optional[str | Path] = None,
               images: int | Split | None = None, *, signal: Optional[str] = None,
               skeleton: Optional[dict[str, Any]] = None, data_dir: Optional[str] = None, archs_per_batch: int = 4,
               progress: bool = False, on_start: Callable[[int, int], None] = lambda todo, earlier: None,
               on_row: Callable[[dict[str, Any], bool], None] = lambda row, earlier: None) -> list[dict[str, Any]]:
    """Score `archs` (a file of them, one per line, or a list) and return one row per architecture in
    order: {"arch", "hash", "signal", "images", "data", "scorer", "score"}. With `output` (JSON lines) each
    row is appended as soon as it is scored, a rerun takes the rows scored before with the same GHN,
    signal and images instead of scoring them again, and at the end the file holds every row it held
    before (other architectures, other settings) followed by these rows in order. `on_row(row, earlier)`
    is called for each row, earlier ones (read back) first, after `on_start(to score, read back)`."""
    where = {**ghn.scoring.skeleton, **{k: v for k, v in (skeleton or {}).items() if v is not None}}
    given = read_architectures(archs, ghn.config.space, **where) if isinstance(archs, (str, Path)) else archs
    graphs = placed(ghn, given, skeleton)
    split = validation_images(images, data_dir)
    signal = signal or ghn.scoring.signal
    key = {"signal": signal, "images": len(split.labels), "data": images_digest(split),
           "scorer": scorer_digest(ghn, ghn.scoring.image_batch)}
    spec = get_space(ghn.config.space)
    old = list(read_records(output)) if output else []
    done = {r["hash"]: r for r in old if {k: r.get(k) for k in key} == key and "hash" in r and "score" in r}
    rows = {g.stable_hash(): done[g.stable_hash()] for g in graphs if g.stable_hash() in done}
    todo = list({g.stable_hash(): g for g in graphs if g.stable_hash() not in rows}.values())
    on_start(len(todo), len(rows))
    for row in rows.values():
        on_row(row, True)
    if output:
        end_with_newline(output)
    log = Path(output).open("a") if output else None

    def scored(i: int, graph: ArchGraph, value: float) -> None:
        row = {"arch": spec.label(graph), "hash": graph.stable_hash(), **key, "score": value}
        rows[row["hash"]] = row
        on_row(row, False)
        if log:
            log.write(json.dumps(row) + "\n")
            log.flush()

    try:
        if todo:
            score_with(ghn, todo, split, signal=signal, archs_per_batch=archs_per_batch, progress=progress,
                       on_scored=scored)
    finally:
        if log:
            log.close()
    result = [rows[g.stable_hash()] for g in graphs]
    if output:
        mine = {r["hash"] for r in result}
        kept = [r for r in old if not (r.get("hash") in mine and {k: r.get(k) for k in key} == key)]
        text = "".join(json.dumps(r) + "\n" for r in kept + result)
        atomic_write(output, lambda f: f.write(text.encode()))
    return result


__all__ = ["score", "score_file", "load_ghn", "images_digest"]
