"""Tests for ghn_ext.workflows.train: GHN training on real CIFAR-10, checkpoints, exact resume, failure modes.

Every run is tiny (one-block networks of 4-8 channels, 3-node cells, a GHN with 4x4 blocks and one
propagation pass), so the whole file takes seconds on two CPU cores. Uses the real CIFAR-10 from
$GHN_DATA_DIR, else <root>/shared/data/cifar10 next to the repository; never downloads.
"""
import copy
import dataclasses
from dataclasses import asdict
import math
import random
import shutil
import sys
import types
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from ghn_ext.workflows import train as T  # noqa: E402
from ghn_ext.core.data import normalize  # noqa: E402
from ghn_ext.core.checkpoints import CheckpointError  # noqa: E402
from ghn_ext.core.checks import InputError  # noqa: E402
from ghn_ext.models.ghn import GHNConfig, GraphHyperNetwork  # noqa: E402
from ghn_ext.nets.network import run_network  # noqa: E402
from ghn_ext.spaces import nb201  # noqa: E402
from ghn_ext.workflows.train import NonFiniteLossError, TrainConfig, Trainer, read_log, step_architectures  # noqa: E402

TINY_GHN = {"tile_channels": 4, "T": 1}


def tiny(data_dir, **kw) -> TrainConfig:
    """A tiny run; `ghn` gives GHNConfig fields besides the space, which follows the run's."""
    base = dict(space="classification", steps=6, batch_size=8, archs_per_step=2, num_nodes=3, num_blocks=1,
                channels=4, checkpoint_every=3, eval_every=3, eval_archs=2, eval_images=100, data_dir=data_dir)
    cfg = {**base, **kw}
    return TrainConfig(**{**cfg, "ghn": GHNConfig(space=cfg["space"], **cfg.get("ghn", TINY_GHN))})


def same_tree(a, b) -> bool:
    """Deep equality of nested dicts/lists of tensors and plain values (tensors bit for bit)."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.dtype == b.dtype \
            and a.shape == b.shape and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same_tree(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return isinstance(b, (list, tuple)) and len(a) == len(b) and all(map(same_tree, a, b))
    return a == b


def snapshot(trainer: Trainer):
    """Everything a training step changes, copied."""
    return copy.deepcopy({"ghn": trainer.ghn.state_dict(), "optimizer": trainer.optimizer.state_dict(),
                          "scheduler": trainer.scheduler.state_dict(), "loader": trainer.loader.state_dict(),
                          "grads": [p.grad for p in trainer.ghn.parameters()], "step": trainer.step})


def log_without_timing(path):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in read_log(path)]


def tmp_files(folder):
    return sorted(p.name for p in Path(folder).rglob("*.tmp"))


# ------------------------------------------------------------------ a short run learns

LEARN_STEPS = 30


@pytest.fixture(scope="module")
def learned(data_dir, tmp_path_factory):
    """30 steps at lr 3e-3 on random 3-node cells; the held-out loss is measured before and after."""
    cfg = tiny(data_dir, steps=LEARN_STEPS, batch_size=16, channels=8, lr=3e-3, checkpoint_every=10,
               eval_every=0)
    out = tmp_path_factory.mktemp("learn")
    trainer = Trainer(cfg, out)
    sampler, rng = cfg.sampler(), random.Random("held-out architectures")
    archs = [sampler(rng) for _ in range(4)]
    x, y = normalize(trainer.val.images[:100]), trainer.val.labels[:100]

    @torch.no_grad()
    def held_out_loss():
        weights = trainer.ghn(archs)
        return sum(F.cross_entropy(run_network(g, x, w), y).item() for g, w in zip(archs, weights)) / len(archs)

    before = held_out_loss()
    result = trainer.run(progress=False)
    return types.SimpleNamespace(cfg=cfg, out=out, trainer=trainer, result=result, before=before,
                                 after=held_out_loss(), log=read_log(trainer.log_path))


def test_short_run_lowers_the_loss(learned):
    assert learned.result == {"step": LEARN_STEPS, "done": True}
    assert [r["step"] for r in learned.log] == list(range(LEARN_STEPS))
    losses = [r["loss"] for r in learned.log]
    assert all(math.isfinite(l) for l in losses)
    assert all(0.0 <= r["acc"] <= 1.0 for r in learned.log)
    # on fixed held-out architectures and images (noise-free): a clear drop (about 2.7 -> 2.2)
    assert learned.after < learned.before - 0.2, (learned.before, learned.after)
    # and in the training log itself, whose steps each see new random architectures and images: at batch
    # 16 a step's loss varies by +-0.3 around its trend, so the log's late steps are compared with the
    # untrained GHN's held-out loss rather than with its own first steps (already 2.3 after one step)
    last = sum(losses[-10:]) / 10
    assert last < learned.before - 0.1, (learned.before, last)


def test_lr_is_halved_at_half_and_three_quarters(learned):
    lr = learned.cfg.lr
    logged = [r["lr"] for r in learned.log]  # the lr each step trained with
    expected = [lr if s < 15 else lr / 2 if s < 22 else lr / 4 for s in range(LEARN_STEPS)]
    assert logged == pytest.approx(expected, rel=1e-12)
    assert learned.trainer.optimizer.param_groups[0]["lr"] == pytest.approx(lr / 4)


def test_final_validation_accuracy_is_logged(learned):
    with_val = [r for r in learned.log if "val_acc" in r]
    assert [r["step"] for r in with_val] == [LEARN_STEPS - 1]  # eval_every=0: at the end only
    assert 0.0 <= with_val[0]["val_acc"] <= 1.0


def test_validate_returns_an_accuracy_and_leaves_the_ghn_alone(learned):
    trainer = learned.trainer
    before = snapshot(trainer)
    acc = trainer.validate()
    assert isinstance(acc, float) and 0.0 <= acc <= 1.0
    # 2 architectures x 100 images: a multiple of 1/200
    assert acc * 200 == pytest.approx(round(acc * 200))
    assert trainer.ghn.training
    assert same_tree(snapshot(trainer), before)
    # the same unseen architectures (a fixed generator) as the logged final validation of this GHN
    assert learned.log[-1]["val_acc"] == acc


def test_outputs_are_written_atomically(learned):
    assert {p.name for p in learned.out.iterdir()} == {"checkpoint.pt", "train_log.jsonl", "ghn.pt"}
    assert tmp_files(learned.out) == []


def test_ghn_file_round_trip(learned, tmp_path):
    trainer = learned.trainer
    ghn = GraphHyperNetwork.load(learned.out / "ghn.pt", space="classification")
    assert ghn.config == trainer.ghn.config
    assert same_tree(ghn.state_dict(), trainer.ghn.state_dict())
    ckpt = torch.load(learned.out / "ghn.pt", weights_only=True)
    assert TrainConfig.from_dict(ckpt["train_config"]) == learned.cfg
    arch = learned.cfg.sampler()(random.Random(5))
    assert same_tree(ghn(arch), trainer.ghn(arch))
    # save -> load again
    ghn.save(tmp_path / "again.pt")
    assert same_tree(GraphHyperNetwork.load(tmp_path / "again.pt").state_dict(), ghn.state_dict())
    assert tmp_files(tmp_path) == []
    with pytest.raises(CheckpointError, match="'classification' space, not 'nb201'"):
        GraphHyperNetwork.load(learned.out / "ghn.pt", space="nb201")


# ------------------------------------------------------------------ resume and determinism

@pytest.fixture(scope="module")
def straight(data_dir, tmp_path_factory):
    """Run A: 6 steps (2 architectures each, validation every 3) without interruption."""
    out = tmp_path_factory.mktemp("straight")
    trainer = Trainer(tiny(data_dir), out)
    trainer.run(progress=False)
    return trainer


def assert_same_run(a: Trainer, b: Trainer):
    assert b.step == a.step
    assert same_tree(b.ghn.state_dict(), a.ghn.state_dict())
    assert same_tree(b.optimizer.state_dict(), a.optimizer.state_dict())
    assert b.scheduler.state_dict() == a.scheduler.state_dict()
    assert b.loader.state_dict() == a.loader.state_dict()
    assert log_without_timing(b.log_path) == log_without_timing(a.log_path)
    sa, sb = (torch.load(t.checkpoint_path, weights_only=True) for t in (a, b))
    assert same_tree(sb, sa)  # the checkpoints as well (config, step, every state)
    assert same_tree(GraphHyperNetwork.load(b.out / "ghn.pt").state_dict(),
                     GraphHyperNetwork.load(a.out / "ghn.pt").state_dict())


@pytest.mark.parametrize("stop_after", [3, 4], ids=["killed-at-checkpoint", "killed-after-checkpoint"])
def test_kill_and_resume_reproduces_the_uninterrupted_run(straight, data_dir, tmp_path, stop_after):
    cfg = tiny(data_dir)
    first = Trainer(cfg, tmp_path)
    assert not first.resume()  # nothing to resume yet
    assert first.run(stop_after=stop_after, progress=False) == {"step": stop_after, "done": False}
    assert not (tmp_path / "ghn.pt").exists()
    assert len(read_log(first.log_path)) == stop_after
    del first  # "killed": a new process picks up the folder

    second = Trainer(cfg, tmp_path)
    assert second.resume()
    assert second.step == 3  # the last checkpoint; step 3 of a run killed at 4 is redone
    assert [r["step"] for r in read_log(second.log_path)] == [0, 1, 2]  # lines after it dropped
    assert second.run(progress=False) == {"step": 6, "done": True}
    assert_same_run(straight, second)
    assert [r["step"] for r in read_log(second.log_path) if "val_acc" in r] == [2, 5]
    assert tmp_files(tmp_path) == []


def test_identical_fresh_runs_are_identical(straight, data_dir, tmp_path):
    again = Trainer(tiny(data_dir), tmp_path)
    again.run(progress=False)
    assert_same_run(straight, again)


def test_restart_in_a_used_folder_starts_a_clean_log(straight, data_dir, tmp_path):
    shutil.copytree(straight.out, tmp_path, dirs_exist_ok=True)
    fresh = Trainer(tiny(data_dir), tmp_path)  # not resumed: trains from step 0 again
    fresh.run(stop_after=2, progress=False)
    assert [r["step"] for r in read_log(fresh.log_path)] == [0, 1]


def test_step_architectures_depend_on_seed_and_step_only(data_dir):
    cfg = tiny(data_dir)
    hashes = lambda c, s: [g.stable_hash() for g in step_architectures(c, s)]  # noqa: E731
    assert hashes(cfg, 4) == hashes(cfg, 4) == [g.stable_hash() for g in step_architectures(cfg, 4, cfg.sampler())]
    assert len(hashes(cfg, 4)) == cfg.archs_per_step
    assert hashes(cfg, 4) != hashes(cfg, 5)
    assert hashes(cfg, 4) != hashes(dataclasses.replace(cfg, seed=1), 4)
    # another step count or checkpoint interval does not change what a step trains on
    assert hashes(cfg, 4) == hashes(dataclasses.replace(cfg, steps=100, checkpoint_every=7), 4)


@pytest.mark.parametrize("change, message", [
    (dict(lr=2e-3), r"other settings \(lr\)"),
    (dict(batch_size=16, seed=1), r"other settings \(batch_size, seed\)"),
    (dict(ghn={"tile_channels": 4, "T": 2}), r"other settings \(ghn.T\)"),
    (dict(space="nb201", channels=4, cells_per_stage=1), "'classification' space, not 'nb201'"),
    (dict(ema=0.9), r"other settings \(ema\)"),
])
def test_resume_with_other_settings_is_refused(straight, data_dir, tmp_path, change, message):
    shutil.copytree(straight.out, tmp_path, dirs_exist_ok=True)
    trainer = Trainer(tiny(data_dir, **change), tmp_path)
    with pytest.raises(CheckpointError, match=message) as err:
        trainer.resume()
    assert str(tmp_path / "checkpoint.pt") in str(err.value)
    assert trainer.step == 0


def test_resume_with_more_steps_continues(straight, data_dir, tmp_path):
    shutil.copytree(straight.out, tmp_path, dirs_exist_ok=True)
    trainer = Trainer(tiny(data_dir, steps=7), tmp_path)
    assert trainer.resume() and trainer.step == 6
    assert same_tree(trainer.ghn.state_dict(), straight.ghn.state_dict())
    trainer.run(progress=False)
    assert [r["step"] for r in read_log(trainer.log_path)] == list(range(7))


def test_resume_with_another_step_count_follows_its_schedule(data_dir, tmp_path):
    """The lr halvings sit at 50% and 75% of the step count given on resume, not of the one saved: a
    12-step run cut at step 3 and resumed as an 8-step run trains as an 8-step run from the start."""
    eight = Trainer(tiny(data_dir, steps=8), tmp_path / "eight")
    eight.run(progress=False)
    Trainer(tiny(data_dir, steps=12), tmp_path / "cut").run(stop_after=3, progress=False)
    resumed = Trainer(tiny(data_dir, steps=8), tmp_path / "cut")
    assert resumed.resume() and resumed.step == 3
    resumed.run(progress=False)
    lrs = [[r["lr"] for r in read_log(t.log_path)] for t in (eight, resumed)]
    assert lrs[0] == lrs[1] == [1e-3] * 4 + [5e-4] * 2 + [2.5e-4] * 2
    assert same_tree(resumed.ghn.state_dict(), eight.ghn.state_dict())


@pytest.mark.parametrize("damage", ["garbage", "truncated", "other-file", "flipped-byte"])
def test_corrupt_checkpoint_raises_checkpoint_error_naming_the_path(straight, data_dir, tmp_path, damage):
    shutil.copytree(straight.out, tmp_path, dirs_exist_ok=True)
    path = tmp_path / "checkpoint.pt"
    if damage == "garbage":
        path.write_bytes(b"definitely not a checkpoint")
    elif damage == "truncated":
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif damage == "flipped-byte":  # read by torch.load without complaint; the checksum catches it
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0x40
        path.write_bytes(bytes(data))
    else:  # a GHN file where the training state belongs
        shutil.copy(tmp_path / "ghn.pt", path)
    trainer = Trainer(tiny(data_dir), tmp_path)
    with pytest.raises(CheckpointError, match="cannot resume") as err:
        trainer.resume()
    assert str(path) in str(err.value)
    assert trainer.step == 0


def test_a_failed_checkpoint_write_leaves_the_previous_one(straight, data_dir, tmp_path, monkeypatch):
    shutil.copytree(straight.out, tmp_path, dirs_exist_ok=True)
    trainer = Trainer(tiny(data_dir), tmp_path)
    trainer.resume()
    before = (tmp_path / "checkpoint.pt").read_bytes()

    def dying_save(obj, f):
        f.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", dying_save)
    with pytest.raises(OSError, match="disk full"):
        trainer.save_checkpoint()
    assert (tmp_path / "checkpoint.pt").read_bytes() == before
    assert tmp_files(tmp_path) == []


@pytest.mark.parametrize("how", ["nan-loss", "inf-weights"])
def test_non_finite_loss_stops_without_training_through_it(data_dir, tmp_path, monkeypatch, how):
    trainer = Trainer(tiny(data_dir, checkpoint_every=1, eval_every=0), tmp_path)
    trainer.run(stop_after=2, progress=False)
    before = snapshot(trainer)
    checkpoint, log = (tmp_path / "checkpoint.pt").read_bytes(), trainer.log_path.read_text()

    if how == "nan-loss":
        cross_entropy = F.cross_entropy
        monkeypatch.setattr(T, "F", types.SimpleNamespace(
            cross_entropy=lambda logits, y: cross_entropy(logits, y) * float("nan")))
    else:  # the GHN emits infinite weights
        blocks = trainer.ghn.blocks
        monkeypatch.setattr(trainer.ghn, "blocks", lambda batch, h: blocks(batch, h) * float("inf"))
    with pytest.raises(NonFiniteLossError, match="step 2: loss is (nan|inf)") as err:
        trainer.run(progress=False)
    assert str(tmp_path / "checkpoint.pt") in str(err.value)
    # parameters, Adam moments, lr schedule and gradients untouched (only the batch was drawn)
    assert same_tree(snapshot(trainer), {**before, "loader": trainer.loader.state_dict()})
    assert trainer.step == 2
    assert (tmp_path / "checkpoint.pt").read_bytes() == checkpoint
    assert trainer.log_path.read_text() == log  # no line for the failed step
    assert not (tmp_path / "ghn.pt").exists()

    monkeypatch.undo()  # the intact checkpoint resumes
    resumed = Trainer(tiny(data_dir, checkpoint_every=1, eval_every=0), tmp_path)
    assert resumed.resume() and resumed.step == 2
    assert same_tree(resumed.ghn.state_dict(), before["ghn"])


# ------------------------------------------------------------------ parameter averaging (ema)

EMA = 0.5  # large steps, so that the average visibly differs from the last step's parameters


def ghn_params(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.named_parameters()}


@pytest.fixture(scope="module")
def averaged(data_dir, tmp_path_factory):
    """Run A again with ema: one step per call, the raw parameters recorded after each step."""
    trainer = Trainer(tiny(data_dir, ema=EMA), tmp_path_factory.mktemp("averaged"))
    raw = []
    while trainer.step < trainer.cfg.steps:
        trainer.run(stop_after=1, progress=False)
        raw.append(ghn_params(trainer.ghn))
    return trainer, raw


def test_ema_trains_the_same_parameters_and_saves_their_average(straight, averaged):
    trainer, raw = averaged
    # the averaging only watches: the trained parameters and the losses are run A's
    assert same_tree(trainer.ghn.state_dict(), straight.ghn.state_dict())
    losses = lambda t: [r["loss"] for r in read_log(t.log_path)]  # noqa: E731
    assert losses(trainer) == losses(straight)
    expected = raw[0]  # the first update copies, then avg <- ema * avg + (1 - ema) * p
    for params in raw[1:]:
        expected = {k: EMA * expected[k] + (1 - EMA) * params[k] for k in expected}
    saved = GraphHyperNetwork.load(trainer.out / "ghn.pt")
    for k, v in ghn_params(saved).items():
        torch.testing.assert_close(v, expected[k])
    assert any(not torch.equal(v, raw[-1][k]) for k, v in ghn_params(saved).items())  # not the last step's


def test_ema_run_killed_and_resumed_saves_the_same_average(averaged, data_dir, tmp_path):
    trainer, _ = averaged
    first = Trainer(tiny(data_dir, ema=EMA), tmp_path)
    first.run(stop_after=4, progress=False)
    second = Trainer(tiny(data_dir, ema=EMA), tmp_path)
    assert second.resume() and second.step == 3
    second.run(progress=False)
    assert same_tree(torch.load(second.checkpoint_path, weights_only=True)["averaged"],
                     torch.load(trainer.checkpoint_path, weights_only=True)["averaged"])
    assert same_tree(GraphHyperNetwork.load(tmp_path / "ghn.pt").state_dict(),
                     GraphHyperNetwork.load(trainer.out / "ghn.pt").state_dict())


@pytest.mark.parametrize("ema", [1.0, -0.1, 1.5])
def test_ema_outside_zero_to_one_is_refused(data_dir, ema):
    with pytest.raises(ValueError, match=f"ema is a decay in \\[0, 1\\).*{ema}"):
        tiny(data_dir, ema=ema)


def test_non_finite_loss_before_any_checkpoint_says_so(data_dir, tmp_path, monkeypatch):
    """Issue 29: the NaN guard named a checkpoint file that did not exist."""
    cross_entropy = F.cross_entropy
    monkeypatch.setattr(T, "F", types.SimpleNamespace(
        cross_entropy=lambda logits, y: cross_entropy(logits, y) * float("nan")))
    with pytest.raises(NonFiniteLossError, match=r"step 0: .*\(no checkpoint written yet\)"):
        Trainer(tiny(data_dir, checkpoint_every=1, eval_every=0), tmp_path).run(progress=False)


@pytest.mark.parametrize("field,value", [("eval_archs", 0), ("checkpoint_every", 0), ("batch_size", 0), ("steps", -3),
                                         ("channels", 0), ("cells_per_stage", -1), ("snapshot_every", -1)])
def test_training_config_refuses_runs_that_could_never_finish(data_dir, field, value):
    """Issue 29: --eval-archs 0 crashed in the final validation, before ghn.pt, on every rerun; the
    others ended in tracebacks, or (--steps -3) said "ghn saved" and wrote nothing."""
    with pytest.raises(ValueError, match=f"training {field} must be an integer"):
        tiny(data_dir, **{field: value})


@pytest.mark.parametrize("lr", [0.0, -1e-3, 1e20, float("nan"), float("inf")])
def test_training_config_refuses_learning_rates_outside_zero_to_ten(data_dir, lr):
    with pytest.raises(ValueError, match=r"training lr must be in \(0, 10\]"):
        tiny(data_dir, lr=lr)


def test_op_weights_shape_the_training_cells_not_the_validation_ones(data_dir):
    """--op-weights: training cells drawn with the weights (completed to every op, as saved and checked
    on resume); the validation cells stay uniform, like the cells a search ranks."""
    cfg = tiny(data_dir, space="nb201", cells_per_stage=1, archs_per_step=50,
               op_weights={"nor_conv_3x3": 1, "nor_conv_1x1": 1})
    assert cfg.op_weights == {"none": 0.0, "skip_connect": 0.0, "nor_conv_1x1": 1.0, "nor_conv_3x3": 1.0,
                              "avg_pool_3x3": 0.0}
    assert TrainConfig.from_dict(dataclasses.asdict(cfg)) == cfg
    trained = {op for g in step_architectures(cfg, 0) for op in nb201.cell_ops(g)}
    assert trained == {"nor_conv_1x1", "nor_conv_3x3"}
    rng = random.Random(0)
    validated = {op for _ in range(50) for op in nb201.cell_ops(cfg.sampler(evaluation=True)(rng))}
    assert validated == set(nb201.OPS)


@pytest.mark.parametrize("space, weights, match", [
    ("classification", {"none": 1}, "op weights apply to the nb201 space only, not 'classification'"),
    ("nb201", {"sep_conv": 1}, "training unknown op 'sep_conv' in the op weights"),
    ("nb201", {"none": 0}, "training at least one op needs a positive weight"),
])
def test_training_config_refuses_bad_op_weights(data_dir, space, weights, match):
    with pytest.raises(InputError, match=match):
        tiny(data_dir, space=space, cells_per_stage=1, op_weights=weights)


def test_resume_with_other_op_weights_is_refused(data_dir, tmp_path):
    cfg = tiny(data_dir, space="nb201", cells_per_stage=1, steps=2, checkpoint_every=1, eval_every=0,
               op_weights={"nor_conv_3x3": 2, "none": 1})
    Trainer(cfg, tmp_path).run(stop_after=1, progress=False)
    other = Trainer(dataclasses.replace(cfg, op_weights={"nor_conv_3x3": 1, "none": 1}), tmp_path)
    with pytest.raises(CheckpointError, match=r"other settings \(op_weights\)"):
        other.resume()


def test_ghn_config_refuses_zero_tile_channels(data_dir):
    with pytest.raises(ValueError, match=r"GHN tile_channels must be an integer in \[1, 1024\], got 0"):
        tiny(data_dir, ghn={"tile_channels": 0})


def test_ghn_settings_are_a_ghn_config_of_the_training_space(data_dir):
    assert TrainConfig(space="nb201").ghn == GHNConfig(space="nb201")
    with pytest.raises(InputError, match="must be a GHNConfig, not dict"):
        TrainConfig(ghn={"T": 2})
    with pytest.raises(InputError, match=r"configured for the 'classification' space but trains on 'nb201'.*"
                                         r"GHNConfig\(space='nb201'"):
        TrainConfig(space="nb201", ghn=GHNConfig(T=2))


def test_configs_saved_before_ghn_config_was_nested_read_the_same(data_dir):
    """Older runs saved only the GHN fields set by hand; their checkpoints resume and compare equal."""
    cfg = tiny(data_dir)
    old = {**asdict(cfg), "ghn": dict(TINY_GHN)}
    assert TrainConfig.from_dict(old) == cfg == TrainConfig.from_dict(asdict(cfg))


def test_nb201_space_trains(data_dir, tmp_path):
    cfg = tiny(data_dir, space="nb201", steps=2, channels=4, cells_per_stage=1, eval_every=0)
    trainer = Trainer(cfg, tmp_path)
    assert trainer.run(progress=False)["done"]
    log = read_log(trainer.log_path)
    assert len(log) == 2 and all(math.isfinite(r["loss"]) for r in log) and 0 <= log[-1]["val_acc"] <= 1
    assert GraphHyperNetwork.load(tmp_path / "ghn.pt", space="nb201").config.space == "nb201"
