"""The paper's ablations (Sec. 5.4) on the ground-truth set: which GHN design choices make it rank well.

Three studies, each a set of GHN variants trained under one budget and scored like `ghn correlate`:
  * nodes: the number of nodes per cell while training (Fig. 5a); every GHN is tested at N=17;
  * propagation: synchronous against forward-backward over T (Fig. 5b);
  * stacking: the stacked-GHN variants of Table 5 (no sharing and no passing / passing only / both).
Variants that coincide (the default GHN appears in every study) are trained once. Each variant trains in
its own folder and resumes there; scores go to one prediction cache, so an interrupted ablation picks up
where it stopped. The result is one markdown report and a plot per study.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Sequence

from ghn_ext.studies.correlate import PredictionCache, model_predictor, summarize
from ghn_ext.core.data import cifar10_splits
from ghn_ext.models.ghn import GraphHyperNetwork
from ghn_ext.studies.groundtruth import groundtruth_set
from ghn_ext.workflows.train import TrainConfig, Trainer
from ghn_ext.spaces import classification, get_space
from ghn_ext.core.checks import InputError

STUDIES = ("nodes", "propagation", "stacking")


@dataclass(frozen=True)
class Variant:
    """The GHN choices the ablations vary; the defaults are the paper's chosen GHN."""
    num_nodes: int = 7
    scheme: str = "fb"
    T: int = 5
    share_params: bool = True
    pass_embedding: bool = True

    @property
    def name(self) -> str:
        return (f"N{self.num_nodes}-{self.scheme}-T{self.T}"
                f"-SP{int(self.share_params)}-PE{int(self.pass_embedding)}")


def study_variants(study: str, nodes: Sequence[int], steps_T: Sequence[int]) -> list[Variant]:
    base = Variant()
    if study == "nodes":
        return [replace(base, num_nodes=n) for n in nodes]
    if study == "propagation":
        return [replace(base, scheme=s, T=t) for s in ("sync", "fb") for t in steps_T]
    if study == "stacking":
        return [replace(base, share_params=False, pass_embedding=False),
                replace(base, share_params=False, pass_embedding=True), base]
    raise InputError(f"unknown study {study!r}; choose from {STUDIES}")


def variant_config(base: TrainConfig, v: Variant) -> TrainConfig:
    ghn = replace(base.ghn, scheme=v.scheme, T=v.T, share_params=v.share_params, pass_embedding=v.pass_embedding)
    return replace(base, num_nodes=v.num_nodes, ghn=ghn)


def _plot_curve(rows_by_variant: dict[Variant, dict], x_of, series_of, xlabel: str, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(7, 3))
    for ax, metric, title in zip(axes, ("pearson", "pearson_top"), ("all architectures", "top half")):
        series: dict[str, list[tuple[int, float]]] = {}
        for v, row in rows_by_variant.items():
            series.setdefault(series_of(v), []).append((x_of(v), row[metric]))
        for label, points in series.items():
            points.sort()
            ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=label or None)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("Pearson R")
        ax.set_title(title, fontsize=9)
        if any(series):
            ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _study_table(study: str, rows_by_variant: dict[Variant, dict]) -> str:
    label = {"nodes": lambda v: f"N={v.num_nodes}",
             "propagation": lambda v: f"{v.scheme}, T={v.T}",
             "stacking": lambda v: f"SP {'yes' if v.share_params else 'no'}, "
                                   f"PE {'yes' if v.pass_embedding else 'no'}"}[study]
    lines = ["| variant | Pearson R | R, top half | Spearman | Kendall tau | training (h) |",
             "|---|---|---|---|---|---|"]
    for v, r in rows_by_variant.items():
        lines.append(f"| {label(v)} | {r['pearson']:.3f} | {r['pearson_top']:.3f} | {r['spearman']:.3f} | "
                     f"{r['kendall']:.3f} | {r['initial_hours']:.3f} |")
    return "\n".join(lines) + "\n"


def run_ablation(groundtruth: str | Path, out_dir: str | Path, steps: int, studies: Sequence[str] = STUDIES,
                 nodes: Sequence[int] = (3, 5, 7, 11, classification.EVAL_NODES), steps_T: Sequence[int] = (1, 3, 5),
                 base: TrainConfig | None = None, data_dir: str | None = None,
                 progress: bool = True) -> str:
    """Train (or resume) every variant of `studies`, score each on the ground-truth set, and write
    ablation.md with one table per study, plus nodes.png and propagation.png. Returns the markdown."""
    protocol, archs, records = groundtruth_set(groundtruth)
    if not get_space(protocol.space).cell_nodes:
        raise InputError("the ablations vary the nodes per cell, a setting of the classification space; "
                         f"{groundtruth} is a {protocol.space!r} ground truth")
    out = Path(out_dir)
    base = base or TrainConfig()
    base = replace(base, space=protocol.space, steps=steps, num_blocks=protocol.num_blocks,
                   channels=protocol.channels, data_dir=data_dir or base.data_dir)
    plan = {study: study_variants(study, nodes, steps_T) for study in studies}
    val = cifar10_splits(data_dir).val.head(protocol.val_images)
    cache = PredictionCache(out / "predictions.json")
    rows: dict[Variant, dict] = {}
    for v in dict.fromkeys(v for variants in plan.values() for v in variants):  # each variant once, in order
        run_dir = out / v.name
        trainer = Trainer(variant_config(base, v), run_dir)
        trainer.resume()
        trainer.run(progress=progress)
        ghn = GraphHyperNetwork.load(run_dir / "ghn.pt", protocol.space)
        entry = cache.run(model_predictor(v.name, ghn, val, run_dir / "ghn.pt"), archs, progress)
        rows[v] = summarize(v.name, entry, records)

    report = [f"# GHN ablations: {len(records)} ground-truth architectures, {steps} training steps each\n"]
    for study, variants in plan.items():
        by_variant = {v: rows[v] for v in variants}
        report += [f"\n## {study}\n\n", _study_table(study, by_variant)]
        if study == "nodes":
            _plot_curve(by_variant, lambda v: v.num_nodes, lambda v: "", "nodes per cell in training",
                        out / "nodes.png")
        elif study == "propagation":
            _plot_curve(by_variant, lambda v: v.T, lambda v: v.scheme, "propagation steps T",
                        out / "propagation.png")
    text = "".join(report)
    (out / "ablation.md").write_text(text)
    return text


__all__ = ["STUDIES", "Variant", "study_variants", "variant_config", "run_ablation"]
