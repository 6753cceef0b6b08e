"""A whole GHN training step at the demo configuration, and the share of it spent in propagation and
weight emission, with the compiled ops and with the pure-PyTorch references (GHN_EXT_REFERENCE=1).

The step (`Trainer.train_step`): one random N=7 architecture of the demo's small networks (4 cells,
16 channels), the GHN's forward, the network on 64 CIFAR-10 images, the backward and Adam's update.
"ops" times what the step spends in the two ops on the same architecture: propagation forward and
backward (the schedule included) and the emission (its plan included) forward and backward. The share
ops / step is printed at the end of the run.

Run: OMP_NUM_THREADS=1 python -m pytest bench/test_bench_train_step.py --benchmark-columns=mean,stddev,rounds
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from ghn_ext.workflows.demo import demo_train_config
from ghn_ext.models.ghn import EmissionPlan
from ghn_ext.core.graph import GraphBatch
from ghn_ext.ops.emit import emit_weights
from ghn_ext.workflows.train import Trainer, step_architectures

DATA_DIR = os.environ.get("GHN_DATA_DIR") or str(Path(__file__).resolve().parents[2] / "shared/data/cifar10")
MEANS: dict[tuple[str, str], float] = {}


@pytest.fixture(scope="module")
def trainer(tmp_path_factory):
    if not (Path(DATA_DIR) / "cifar10.npz").is_file():
        pytest.skip(f"CIFAR-10 not found at {DATA_DIR} (set GHN_DATA_DIR)")
    return Trainer(demo_train_config(data_dir=DATA_DIR), tmp_path_factory.mktemp("train_step"))


def ghn_ops(trainer: Trainer):
    """Propagation and emission, forward and backward, on the step's architecture."""
    ghn = trainer.ghn
    batch = GraphBatch.from_graphs(step_architectures(trainer.cfg, trainer.step, trainer.sampler))
    h0 = ghn.initial_embeddings(batch).detach().requires_grad_()
    blocks = ghn.blocks(batch, h0).detach().requires_grad_()
    params = list(ghn.gnn_params())

    def run():
        h = ghn.propagate(batch, h0)
        torch.autograd.grad(h, [h0, *params], torch.ones_like(h))
        plan = EmissionPlan.build(batch.graphs, batch.node_ptr.tolist(), ghn.config.kernel,
                                  ghn.config.input_size)
        flat = emit_weights(blocks, plan.node_index, plan.shapes, plan.anchors, plan.scales)
        torch.autograd.grad(flat, blocks, torch.ones_like(flat))

    return run


def share(impl: str):
    if ("ops", impl) in MEANS and ("step", impl) in MEANS:
        ops, step = MEANS["ops", impl], MEANS["step", impl]
        return (f"training step ({impl}): {step * 1e3:.0f} ms, of which propagation + emission "
                f"{ops * 1e3:.1f} ms = {100 * ops / step:.1f}%")
    return None


@pytest.mark.parametrize("impl", ["kernel", "reference"])
@pytest.mark.parametrize("part", ["step", "ops"])
def test_train_step(benchmark, figures, trainer, monkeypatch, impl, part):
    monkeypatch.setenv("GHN_EXT_REFERENCE", "1" if impl == "reference" else "0")
    fn = trainer.train_step if part == "step" else ghn_ops(trainer)
    fn()  # warm-up (first-call allocations, thread pools)
    benchmark.group = f"demo training step: {part}"
    benchmark.pedantic(fn, rounds=10, iterations=1)
    MEANS[part, impl] = benchmark.stats.stats.mean
    if part == "ops":
        figures(lambda: share(impl))
