"""Tests of ghn_ext.core.distributed and the commands under torchrun: 2 CPU processes with gloo on this machine.

The launched runs are tiny (one-block networks, 4-channel GHN blocks, one propagation pass), so each
torchrun takes a few seconds, most of it starting Python and reading CIFAR-10 twice. Checked: the
search's gathered ranking equals the single-process one; DDP keeps the GHN's parameters equal on the
ranks and equal to one process averaging the ranks' losses; checkpoints resume on another number of
ranks; final training scales and warms up its lr and keeps its ranks in step. The pieces the launched
runs rely on (sharded loader, per-rank architectures, the lr schedule) are checked in-process first.
"""
from __future__ import annotations

import json
import math
import os
import random
import subprocess
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path

import pytest
import torch

from ghn_ext.cli import main
from ghn_ext.core.data import TensorLoader
from ghn_ext.core.distributed import DistContext, deal, gather_lists, init_distributed, resolve_device
from ghn_ext.workflows.final import FinalConfig, learning_rate
from ghn_ext.models.ghn import GHNConfig, GraphHyperNetwork
from ghn_ext.nets.network import run_network
from ghn_ext.spaces import classification
from ghn_ext.workflows.train import TrainConfig, Trainer, exits_loss, read_log, step_architectures

pytestmark = pytest.mark.slow  # every test launches torchrun processes

REPO = Path(__file__).resolve().parents[1]
TINY_GHN = {"tile_channels": 4, "T": 1}


def torchrun(args: list[str], nproc: int = 2, timeout: float = 300) -> subprocess.CompletedProcess:
    """Launch `args` (a script path or `-m module ...`) on `nproc` local processes with torchrun, in a
    temporary directory of its own (torchrun leaves a torchelastic_* folder in it, removed after)."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", *args]
    with tempfile.TemporaryDirectory(prefix="ghn_torchrun_") as tmp:
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), "TMPDIR": tmp}
        proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"torchrun failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    return proc


def ghn_cli(*args: str) -> list[str]:
    return ["-m", "ghn_ext.cli", *args]


# ------------------------------------------------------------------ in-process pieces

def test_without_torchrun_the_context_is_a_single_process(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    ctx = init_distributed("cpu")
    assert (ctx.rank, ctx.world_size, ctx.is_main, ctx.distributed) == (0, 1, True, False)
    assert gather_lists([1, 2], ctx) == [1, 2] and deal(list(range(5)), ctx) == [0, 1, 2, 3, 4]


def test_bad_launch_settings_are_named(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(ValueError, match="WORLD_SIZE"):
        init_distributed("cpu")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "2")
    with pytest.raises(ValueError, match="RANK=2 is outside WORLD_SIZE=2"):
        init_distributed("cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda")


def test_deal_shares_every_item_once():
    items = list(range(11))
    shares = [deal(items, DistContext(rank=r, world_size=3)) for r in range(3)]
    assert sorted(sum(shares, [])) == items and shares[1] == [1, 4, 7, 10]


def test_sharded_loader_rows_make_the_single_loaders_batches():
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (50, 3, 8, 8), dtype=torch.uint8, generator=g)
    labels = torch.randint(0, 10, (50,), generator=g)
    opts = dict(shuffle=True, augment=True, cutout=3, drop_last=True, seed=5)
    whole = TensorLoader(images, labels, 12, **opts)
    shards = [TensorLoader(images, labels, 4, shard=(r, 3), **opts) for r in range(3)]
    assert len(whole) == len(shards[0]) == 4
    for _ in range(9):  # across an epoch boundary
        x, y = whole.next_batch()
        parts = [s.next_batch() for s in shards]
        assert torch.equal(torch.cat([p[0] for p in parts]), x) and torch.equal(torch.cat([p[1] for p in parts]), y)
    with pytest.raises(ValueError, match="shard"):
        TensorLoader(images, labels, 4, shard=(3, 3))


def test_loader_state_rescales_to_another_global_batch():
    images, labels = torch.zeros(100, 3, 4, 4, dtype=torch.uint8), torch.zeros(100, dtype=torch.long)
    two_ranks = TensorLoader(images, labels, 10, drop_last=True, shard=(0, 2))  # global batch 20
    for _ in range(3):
        two_ranks.next_batch()  # 60 examples of epoch 0 seen
    one = TensorLoader(images, labels, 10, drop_last=True)
    with pytest.raises(ValueError, match="batch_size=20"):
        one.load_state_dict(two_ranks.state_dict())
    one.load_state_dict(two_ranks.state_dict(), rescale=True)
    assert (one.epoch, one.position) == (0, 6)  # first unseen batch of 10
    four = TensorLoader(images, labels, 8, drop_last=True, shard=(1, 4))  # global batch 32, 3 per epoch
    four.load_state_dict(two_ranks.state_dict(), rescale=True)
    assert (four.epoch, four.position) == (0, 2)  # ceil(60 / 32)
    two_ranks.next_batch()  # 80 seen: no whole unseen batch of 32 is left in epoch 0
    four.load_state_dict(two_ranks.state_dict(), rescale=True)
    assert (four.epoch, four.position) == (1, 0)


def test_rank_zero_trains_the_single_process_architectures():
    cfg = TrainConfig(num_nodes=5, num_blocks=1, channels=4, archs_per_step=2)
    single = step_architectures(cfg, 7)
    ranks = [step_architectures(cfg, 7, rank=r, world=3) for r in range(3)]
    hashes = [[g.stable_hash() for g in archs] for archs in ranks]
    assert hashes[0] == [g.stable_hash() for g in single]
    assert all(len(h) == 2 for h in hashes) and len(set(sum(hashes, []))) == 6


def test_final_lr_is_scaled_and_warmed_up_with_several_ranks():
    cfg = FinalConfig(lr=0.1, warmup_epochs=2)
    one = [learning_rate(cfg, s, 100, 10) for s in range(100)]
    assert one[0] == pytest.approx(0.1) and one[50] == pytest.approx(0.05)  # no warmup on one process
    four = [learning_rate(cfg, s, 100, 10, world_size=4) for s in range(100)]
    assert four[0] == pytest.approx(0.4 / 20 * math.cos(0) ** 2, rel=1e-6)  # 1/20 of the scaled lr
    assert four[9] == pytest.approx(0.4 * 10 / 20 * 0.5 * (1 + math.cos(math.pi * 9 / 100)))
    assert four[19:] == pytest.approx([4 * v for v in one[19:]])  # warmup over: 4x the single lr
    assert all(a < b for a, b in zip(four[:19], four[1:20]))


# ------------------------------------------------------------------ launched with torchrun (gloo)

@pytest.fixture(scope="module")
def tiny_ghn_file(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ghn") / "ghn.pt"
    GraphHyperNetwork(GHNConfig(space="classification", **TINY_GHN)).save(path)
    return path


def search_args(ckpt, out, data_dir):
    # adaptive: 12 candidates on 100 images, the best 4 on 300
    return ["search", "--ckpt", str(ckpt), "--out", str(out), "--num-archs", "12", "--num-nodes", "5",
            "--num-blocks", "1", "--channels", "4", "--val-images", "300", "--min-images", "100",
            "--min-final", "2", "--archs-per-batch", "2", "--data-dir", data_dir, "--quiet"]


def test_search_on_two_ranks_ranks_like_one_process(tiny_ghn_file, data_dir, tmp_path):
    # both launched alike (one thread per process): torch's CPU kernels may round differently with
    # another thread count, and this untrained GHN's near-tied logits would show it
    torchrun(ghn_cli(*search_args(tiny_ghn_file, tmp_path / "one", data_dir)), nproc=1)
    torchrun(ghn_cli(*search_args(tiny_ghn_file, tmp_path / "two", data_dir)))
    one = json.loads((tmp_path / "one" / "ranking.json").read_text())["ranking"]
    two = json.loads((tmp_path / "two" / "ranking.json").read_text())["ranking"]
    assert two == one and len(one) == 12 and [r["images"] for r in one] == [300] * 4 + [100] * 8
    shares = [{json.loads(l)["index"] for l in (tmp_path / "two" / f"scores.rank{r}.jsonl").read_text().splitlines()
               if json.loads(l)["images"] == 100} for r in range(2)]
    assert shares[0].isdisjoint(shares[1]) and shares[0] | shares[1] == set(range(12))
    assert shares[0] == {0, 1, 4, 5, 8, 9}  # chunks of 2 dealt in turn: the single process's chunks


def test_search_resumes_from_another_number_of_ranks(tiny_ghn_file, data_dir, tmp_path, monkeypatch):
    out = tmp_path / "s"
    torchrun(ghn_cli(*search_args(tiny_ghn_file, out, data_dir)))
    before = json.loads((out / "ranking.json").read_text())["ranking"]
    scored = []
    import ghn_ext.workflows.search as search_module
    real = search_module.network_score_sum
    monkeypatch.setattr(search_module, "network_score_sum",
                        lambda graph, *a, **kw: scored.append(graph) or real(graph, *a, **kw))
    assert main(search_args(tiny_ghn_file, out, data_dir)) == 0  # one process finds every round scored
    assert scored == [] and json.loads((out / "ranking.json").read_text())["ranking"] == before


def ghn_train_config(data_dir, **kw) -> TrainConfig:
    base = dict(steps=3, batch_size=8, archs_per_step=1, num_nodes=3, num_blocks=1, channels=4,
                checkpoint_every=1, eval_archs=2, eval_images=100, data_dir=data_dir,
                ghn=GHNConfig(space="classification", **TINY_GHN))
    return TrainConfig(**{**base, **kw})


def single_process_equivalent(cfg: TrainConfig, world: int) -> GraphHyperNetwork:
    """What DDP over `world` ranks computes, in one process: each step's loss is the mean of the ranks'
    losses (each on its architectures and its rows of the global batch), so the gradient is their mean."""
    trainer = Trainer(cfg, "unused")
    loaders = [TensorLoader(trainer.loader.images, trainer.loader.labels, cfg.batch_size, shuffle=True,
                            augment=True, drop_last=True, seed=cfg.seed, shard=(r, world)) for r in range(world)]
    for step in range(cfg.steps):
        losses = []
        for r, loader in enumerate(loaders):
            archs = step_architectures(cfg, step, trainer.sampler, r, world)
            x, y = loader.next_batch()
            losses += [exits_loss(run_network(g, x, w), y)[0] for g, w in zip(archs, trainer.ghn(archs))]
        trainer.optimizer.zero_grad()
        torch.stack(losses).mean().backward()
        torch.nn.utils.clip_grad_norm_(trainer.ghn.parameters(), cfg.grad_clip)
        trainer.optimizer.step()
        trainer.scheduler.step()
    return trainer.ghn


def test_ghn_training_on_two_ranks_keeps_them_equal_to_one_process_averaging_them(data_dir, tmp_path):
    cfg = ghn_train_config(data_dir)
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"config": asdict(cfg)}))
    torchrun([str(REPO / "python_tests" / "distributed_worker.py"), "ghn", str(spec), str(tmp_path / "run")])
    ranks = [torch.load(tmp_path / "run" / f"params.rank{r}.pt") for r in range(2)]
    assert [r["world_size"] for r in ranks] == [2, 2]
    reference = single_process_equivalent(cfg, 2).state_dict()
    initial = Trainer(cfg, tmp_path / "init").ghn.state_dict()
    for name, value in reference.items():
        assert torch.equal(ranks[0]["params"][name], ranks[1]["params"][name]), name  # in step
        torch.testing.assert_close(ranks[0]["params"][name], value, rtol=1e-4, atol=1e-5, msg=name)
    assert any(not torch.equal(initial[k], v) for k, v in reference.items())  # it did train
    log = read_log(tmp_path / "run" / "train_log.jsonl")  # written once, by rank 0
    assert [r["step"] for r in log] == [0, 1, 2] and "val_acc" in log[-1]


def test_ghn_checkpoint_resumes_on_another_number_of_ranks(data_dir, tmp_path):
    out = tmp_path / "run"
    args = ["train", "--out", str(out), "--num-nodes", "3", "--num-blocks", "1", "--channels", "4",
            "--batch-size", "8", "--tile-channels", "4", "--T", "1", "--eval-archs", "2", "--eval-images", "100",
            "--checkpoint-every", "1", "--data-dir", data_dir, "--quiet"]
    torchrun(ghn_cli(*args, "--steps", "2"))
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    assert (state["step"], state["world_size"], state["loader"]["batch_size"]) == (2, 2, 16)
    assert main([*args, "--steps", "4"]) == 0  # one process continues the two ranks' run
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    assert (state["step"], state["world_size"], state["loader"]["position"]) == (4, 1, 6)  # 32 seen, then 2 x 8
    assert [r["step"] for r in read_log(out / "train_log.jsonl")] == [0, 1, 2, 3]
    assert (out / "ghn.pt").is_file()


def test_final_training_on_two_ranks(data_dir, tmp_path):
    arch = classification.sample_architecture(random.Random(0), 4, 3, 4)
    cfg = FinalConfig(epochs=2, batch_size=16, train_images=128, val_images=100, checkpoint_every=1,
                      warmup_epochs=1, lr=0.05)
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"arch": arch.to_dict(), "config": asdict(cfg), "data_dir": data_dir}))
    torchrun([str(REPO / "python_tests" / "distributed_worker.py"), "final", str(spec), str(tmp_path / "run")])
    ranks = [torch.load(tmp_path / "run" / f"params.rank{r}.pt") for r in range(2)]
    for name, value in ranks[0]["params"].items():
        assert torch.equal(value, ranks[1]["params"][name]), name  # DDP kept the ranks in step
    log = read_log(tmp_path / "run" / "log.jsonl")
    per_epoch = 128 // (16 * 2)
    assert [r["step"] for r in log] == list(range(2 * per_epoch))
    expected = [learning_rate(cfg, s, 2 * per_epoch, per_epoch, world_size=2) for s in range(2 * per_epoch)]
    assert [r["lr"] for r in log] == pytest.approx(expected)
    assert log[0]["lr"] == pytest.approx(0.1 / per_epoch * 0.5 * (1 + math.cos(0)))  # scaled x2, warming up
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    assert result["done"] and 0 <= result["test_acc"] <= 1
