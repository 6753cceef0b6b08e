"""`ghn demo`: the whole method at a size two CPU cores finish in about ten minutes.

Trains a small GHN on CIFAR-10, searches a few hundred random architectures with it, prints the top
ones and writes a report folder: ranking.json, best_cell.png,
training_curve.png and summary.md.
"""
from __future__ import annotations

import random
import time
from dataclasses import dataclass
from pathlib import Path

from ghn_ext.workflows.report import print_ranking
from ghn_ext.nets.network import summary
from ghn_ext.workflows.search import SearchConfig, arch_from_record, run_search
from ghn_ext.spaces import get_space
from ghn_ext.models.ghn import GHNConfig
from ghn_ext.workflows.train import TrainConfig, Trainer, read_log


@dataclass(frozen=True)
class DemoBudget:
    train_steps: int
    evaluations: int     # validation checks on unseen architectures during training
    search_archs: int
    val_images: int


BUDGETS = {"full": DemoBudget(train_steps=400, evaluations=5, search_archs=250, val_images=500),
           "ci": DemoBudget(train_steps=10, evaluations=1, search_archs=4, val_images=200)}
# The space's demo_skeleton, a small macro network, keeps a training step near one second on two cores.

# What the accuracies mean, from runs recorded in bench/RESULTS.md ("ghn demo at the full budget",
# "GHN training evidence") on the 2-core CPU machine
EXPECTATIONS = ("What the numbers mean: chance is 0.10 on CIFAR-10's ten classes. A GHN trained for the demo's "
                "few minutes gives unseen architectures weights at about 0.17-0.23 accuracy; 1,500 steps "
                "(50 minutes) reach about 0.22. These are scores to rank architectures by, not trained "
                "accuracies: what matters is their order (bench/studies/ for how well it matches training), "
                "and the winner is trained properly with `ghn train-final`.")


def plot_training_curve(log_path: Path, out: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    log = read_log(log_path)
    steps = [r["step"] for r in log]

    def smooth(xs, k=20):
        return [sum(xs[max(0, i - k + 1):i + 1]) / len(xs[max(0, i - k + 1):i + 1]) for i in range(len(xs))]

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.5))
    ax1.plot(steps, smooth([r["loss"] for r in log]))
    ax1.set(xlabel="step", ylabel="training loss (smoothed)", title="GHN training loss")
    ax2.plot(steps, smooth([r["acc"] for r in log]), label="train batch (random archs)")
    val = [(r["step"], r["val_acc"]) for r in log if "val_acc" in r]
    if val:
        ax2.plot(*zip(*val), "o-", label="validation (unseen archs)")
    ax2.axhline(0.1, color="gray", ls=":", label="chance")
    ax2.set(xlabel="step", ylabel="accuracy", title="accuracy with generated weights")
    ax2.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def demo_train_config(space: str = "classification", budget: str = "full",
                      data_dir: str | None = None) -> TrainConfig:
    """The GHN training run of the demo (also what bench/test_bench_train_step.py times)."""
    b = BUDGETS[budget]
    return TrainConfig(space=space, steps=b.train_steps, num_nodes=7, data_dir=data_dir,
                       eval_every=b.train_steps // b.evaluations, eval_archs=4, eval_images=b.val_images,
                       ghn=GHNConfig(space=space, tile_channels=16), **get_space(space).demo_skeleton)


def run_demo(out_dir: str | Path, space: str = "classification", budget: str = "full",
             data_dir: str | None = None, progress: bool = True) -> Path:
    out = Path(out_dir)
    b, small = BUDGETS[budget], get_space(space).demo_skeleton
    t0 = time.perf_counter()
    print(f"== ghn demo ({budget}): {space} space, networks {small}")
    example = get_space(space).sampler(**small)(random.Random(0))
    print("an architecture of the space:\n" + summary(example))

    cfg = demo_train_config(space, budget, data_dir)
    trainer = Trainer(cfg, out / "ghn_run")
    if trainer.resume():
        print(f"resuming GHN training at step {trainer.step}")
    trainer.run(progress=progress)
    val_acc = [r["val_acc"] for r in read_log(trainer.log_path) if "val_acc" in r]
    print(f"GHN trained {cfg.steps} steps in {time.perf_counter() - t0:.0f} s; accuracy of generated "
          f"weights on unseen architectures: {val_acc[0]:.3f} -> {val_acc[-1]:.3f} (chance 0.1)")

    scfg = SearchConfig(num_archs=b.search_archs, val_images=b.val_images, data_dir=data_dir, **small)
    ranking = run_search(trainer.ghn, scfg, out / "search", progress=progress)
    print_ranking(ranking, 5)

    best = arch_from_record(ranking[0], space, scfg)
    cell = best.subgraph_of_block(1)
    cell.render_png(out / "best_cell.png", title=f"best cell {best.stable_hash()}")  # matplotlib without graphviz
    cell_file = "best_cell.png"
    plot_training_curve(trainer.log_path, out / "training_curve.png")
    (out / "ranking.json").write_text((out / "search" / "ranking.json").read_text())
    lines = [f"# ghn demo ({budget})", "", f"- space: {space}, networks {small}",
             f"- GHN training: {cfg.steps} steps; validation accuracy of generated weights on unseen "
             f"architectures {val_acc[0]:.3f} -> {val_acc[-1]:.3f}",
             f"- searched {len(ranking)} architectures on {b.val_images} validation images",
             f"- best: {ranking[0]['hash']} predicted accuracy {ranking[0]['score']:.3f}, "
             f"{ranking[0]['params']:,} params, {ranking[0]['flops'] / 1e6:.1f} MFLOPs",
             f"- files: ranking.json, {cell_file}, training_curve.png",
             f"- wall time: {time.perf_counter() - t0:.0f} s", "", EXPECTATIONS]
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    print(EXPECTATIONS)
    print(f"report written to {out}/ in {time.perf_counter() - t0:.0f} s")
    return out
