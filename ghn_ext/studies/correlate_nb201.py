"""Predictors against published NAS-Bench-201 accuracies (`ghn correlate --space nb201 --groundtruth
dev_1000.csv`): how well each orders the table's cells like the benchmark's 200-epoch training.

Rows: every GHN given, the cheap baselines a user could take instead (parameter count, FLOPs, the
zero-cost proxies synflow and NASWOT, all computed here), and the table's own 12-epoch SGD column where
it has one. Columns: Spearman, Kendall and Pearson over all cells and over the top half, and the top-10%
recall, each with a 95% bootstrap interval over the cells (ghn_ext.core.rank_measures), and the cost per cell;
then what a search with each predictor returns: its top pick among N random cells, the best of the N
and the regret (ghn_ext.core.search_outcome), in a second table and a plot of the regret against N.

Scores are cached per predictor in OUT/predictions.json (ghn_ext.studies.correlate.PredictionCache), keyed by the
cell's full-skeleton network, so an interrupted run resumes and a rerun with more predictors or another
accuracy column computes only what is new. A predictor's name carries every setting that changes its
scores, so a cache never hands one setting's scores to another.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from ghn_ext.studies.correlate import PredictionCache, Predictor, model_source, scatter_plot
from ghn_ext.workflows.train import training_seconds
from ghn_ext.core.data import Split, normalize
from ghn_ext.models.ghn import GraphHyperNetwork
from ghn_ext.core.graph import ArchGraph
from ghn_ext.core.files import write_json_atomic
from ghn_ext.nets.network import count_flops, count_params
from ghn_ext.nets.proxies import naswot, synflow
from ghn_ext.core import search_outcome
from ghn_ext.core.rank_measures import bootstrap_intervals, rank_mean, ranking_measures
from ghn_ext.core.search_outcome import top_pick
from ghn_ext.spaces import nb201
from ghn_ext.studies.truth_table import TruthTable
from ghn_ext.core.checks import InputError

BASELINES = ("params", "flops", "synflow", "naswot")
TABLE_SGD_COLUMN = "cifar10_val_12ep"  # the benchmark's own reduced training, read from the table


def ghn_predictor(name: str, ghn: GraphHyperNetwork, checkpoint: str | Path, val: Split,
                  skeleton: Optional[dict[str, Any]] = None, signal: Optional[str] = None, batch: int = 16) -> Predictor:
    """Each cell's score with generated weights, as ghn.score gives it: the GHN's signal and scoring
    skeleton (where it was trained) unless `signal` or `skeleton` settings say otherwise; `batch` cells
    per cached pass."""
    where = {**ghn.scoring.skeleton, **{k: v for k, v in (skeleton or {}).items() if v is not None}}
    signal = signal or ghn.scoring.signal

    def score_many(graphs: list[ArchGraph]) -> list[float]:
        return ghn.score(graphs, val, signal=signal, skeleton=where)

    return Predictor(f"{name} ({signal}, {len(val.labels)} images, {where['cells_per_stage']} cells/stage, "
                     f"{where['channels']} ch)", lambda g: score_many([g])[0], training_seconds(checkpoint), batch,
                     score_many, kind="ghn", source=model_source(ghn, ghn.scoring.image_batch))


def baseline_predictor(kind: str, proxy_images: Optional[Split] = None, seed: int = 0) -> Predictor:
    """One of BASELINES on the full-skeleton network; NASWOT reads `proxy_images` (128 in the paper)."""
    if kind == "params":
        return Predictor("parameter count", lambda g: float(count_params(g)))
    if kind == "flops":
        return Predictor("FLOPs", lambda g: float(count_flops(g)))
    if kind == "synflow":
        return Predictor(f"synflow (seed {seed})", lambda g: synflow(g, seed=seed))
    if kind == "naswot":
        if proxy_images is None:
            raise InputError("NASWOT needs a batch of images")
        x = normalize(proxy_images.images)
        return Predictor(f"NASWOT ({len(x)} images, seed {seed})", lambda g: naswot(g, x, seed))
    raise InputError(f"unknown baseline {kind!r}; choose from {', '.join(BASELINES)}")


def combined_entries(entries: dict[str, dict[str, Any]], ghns: Sequence[str], hashes: Sequence[str]
                     ) -> dict[str, dict[str, Any]]:
    """'<GHN> + synflow': each GHN entry named in `ghns` combined with the synflow proxy by
    :func:`rank_mean`, where both were run. Its cost is the sum of theirs."""
    synflow_name = next((n for n in entries if n.startswith("synflow")), None)
    if synflow_name is None:
        return {}
    proxy = entries[synflow_name]["scores"]
    out = {}
    for name in ghns:
        entry = entries[name]
        mean = rank_mean([entry["scores"][h]["score"] for h in hashes], [proxy[h]["score"] for h in hashes])
        out[f"{name} + synflow (rank mean)"] = {
            "initial_seconds": entry.get("initial_seconds", 0.0),
            "scores": {h: {"score": float(m), "seconds": entry["scores"][h]["seconds"] + proxy[h]["seconds"]}
                       for h, m in zip(hashes, mean)}}
    return out


def measure_row(name: str, predicted: Sequence[float], true: Sequence[float], seconds: float,
                initial_hours: float = 0.0, resamples: int = 1000) -> dict[str, Any]:
    row: dict[str, Any] = {"predictor": name, **ranking_measures(predicted, true),
                           "seconds_per_cell": seconds, "initial_hours": initial_hours}
    row["intervals"] = bootstrap_intervals(predicted, true, resamples) if resamples else {}
    row["top_pick"] = top_pick(predicted, true, resamples=resamples)  # what a search with it returns
    return row


def markdown_table(rows: Sequence[dict[str, Any]]) -> str:
    shown = [("spearman", "Spearman"), ("kendall", "Kendall tau"), ("pearson", "Pearson R"),
             ("spearman_top", "Spearman, top half"), ("kendall_top", "Kendall, top half"),
             ("pearson_top", "Pearson, top half"), ("top10_recall", "top-10% recall")]

    def cell(row, key):
        v, ci = row[key], row.get("intervals", {}).get(key)
        if math.isnan(v):
            return "n/a"
        return f"{v:.3f}" + (f" ({ci[0]:.2f}, {ci[1]:.2f})" if ci and not math.isnan(ci[0]) else "")

    head = ("| predictor | " + " | ".join(h for _, h in shown) + " | initial cost (h) | cost per cell (s) |\n"
            + "|---" * (len(shown) + 3) + "|\n")
    return head + "".join(
        f"| {r['predictor']} | " + " | ".join(cell(r, k) for k, _ in shown)
        + f" | {r['initial_hours']:.2f} | "
        + ("read from the table" if math.isnan(r["seconds_per_cell"]) else f"{r['seconds_per_cell']:.3f}")
        + " |\n" for r in rows)


def correlate_table(predictors: Sequence[Predictor], table: TruthTable, columns: Sequence[str],
                    out_dir: str | Path, progress: bool = True, resamples: int = 1000) -> dict[str, list[dict]]:
    """Run (or resume) every predictor on the table's cells and measure it against each accuracy column;
    writes table_<column>.md, table_<column>.json, scatter_<column>.png and regret_<column>.png to out_dir."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    graphs = [nb201.network(cell) for cell in table.archs]
    hashes = [g.stable_hash() for g in graphs]
    cache = PredictionCache(out / "predictions.json")
    entries = {p.name: cache.run(p, graphs, progress) for p in predictors}
    if not predictors:  # the cached predictors that scored every cell, tabulated against these columns
        entries = {name: entry for name, entry in cache.data.items() if set(hashes) <= entry.get("scores", {}).keys()}
    if not entries:
        raise InputError(f"nothing to tabulate: no predictor given and none in {cache.path} scored every cell")
    result = {}
    for column in columns:
        true = table.column(column)
        rows, panels = [], {}
        for name, entry in entries.items():
            scores = [entry["scores"][h] for h in hashes]
            rows.append(measure_row(name, [s["score"] for s in scores], true,
                                    float(np.mean([s["seconds"] for s in scores])),
                                    entry.get("initial_seconds", 0.0) / 3600, resamples))
            panels[name] = entry
        ghns = [p.name for p in predictors if p.kind == "ghn"]
        for name, combined in combined_entries(entries, ghns, hashes).items():
            scores = [combined["scores"][h] for h in hashes]
            rows.append(measure_row(name, [s["score"] for s in scores], true,
                                    float(np.mean([s["seconds"] for s in scores])),
                                    combined["initial_seconds"] / 3600, resamples))
            panels[name] = combined
        if TABLE_SGD_COLUMN in table.columns and column != TABLE_SGD_COLUMN:
            rows.append(measure_row("12-epoch SGD (the benchmark's, from the table)",
                                    table.column(TABLE_SGD_COLUMN), true, math.nan, 0.0, resamples))
            panels[rows[-1]["predictor"]] = {"scores": {h: {"score": float(v)} for h, v in
                                                        zip(hashes, table.column(TABLE_SGD_COLUMN))}}
        (out / f"table_{column}.md").write_text(
            f"{len(true)} cells of {table.path.name}, against {column}\n\n" + markdown_table(rows)
            + f"\nTop pick at N: the expected {column} of the cell each predictor scores best among N random cells "
            "(95% bootstrap interval over the cells; in brackets the regret, best of the N minus the pick), "
            "and of its top five\n\n" + search_outcome.markdown({r["predictor"]: r["top_pick"] for r in rows}))
        search_outcome.regret_plot({r["predictor"]: r["top_pick"] for r in rows}, out / f"regret_{column}.png",
                                   f"{len(true)} NAS-Bench-201 cells, {column}")
        write_json_atomic(rows, out / f"table_{column}.json")
        records = [{"hash": h, "val_acc": float(t)} for h, t in zip(hashes, true)]
        scatter_plot(panels, records, out / f"scatter_{column}.png", f"{len(true)} NAS-Bench-201 cells",
                     xlabel=column, measure="spearman")
        result[column] = rows
    return result


__all__ = ["BASELINES", "ghn_predictor", "baseline_predictor", "measure_row", "markdown_table", "correlate_table"]
