"""Tests of ghn_ext.workflows.final: final training (appendix 7.3) of a tiny network on real CIFAR-10 images:
auxiliary-head placement, drop-path, a full run with results, exact kill-and-resume, bad checkpoints
and the `ghn train-final` command."""
from __future__ import annotations

import json
import random
from dataclasses import replace

import pytest
import torch

from ghn_ext.cli import main
from ghn_ext.workflows.final import FinalConfig, FinalTrainer, auxiliary_tap, drop_path, droppable_nodes
from ghn_ext.core.checkpoints import CheckpointError
from ghn_ext.spaces import classification

TINY = FinalConfig(epochs=2, batch_size=32, train_images=64, val_images=100, checkpoint_every=1)


def tiny_arch(seed=0, num_blocks=3):
    return classification.sample_architecture(random.Random(seed), 4, num_blocks, 4)


def test_auxiliary_tap_is_the_cell_output_at_two_thirds():
    g = tiny_arch(num_blocks=6)
    v = auxiliary_tap(g)
    assert g.nodes[v].op == "concat" and g.nodes[v].block == 4  # cells are blocks 1..6; 2/3 of 6 -> the 4th


def test_droppable_nodes_are_cell_ops_only():
    g = tiny_arch()
    nodes = droppable_nodes(g)
    for v, n in enumerate(g.nodes):
        cell_op = 1 <= n.block <= 3 and n.op in classification.OPS and n.op != "identity"
        assert (v in nodes) == cell_op, (v, n)


def test_drop_path_zeroes_whole_examples_and_rescales():
    torch.manual_seed(0)
    y = torch.ones(1000, 2, 3, 3)
    out = drop_path(y, 0.25)
    per_example = out.flatten(1)
    assert per_example.unique().tolist() == pytest.approx([0.0, 4 / 3])
    assert (per_example == 0).all(1).float().mean().item() == pytest.approx(0.25, abs=0.05)
    assert torch.equal((per_example == 0).all(1), (per_example == 0).any(1))


@pytest.mark.slow
def test_run_writes_results(data_dir, tmp_path):
    trainer = FinalTrainer(tiny_arch(), TINY, tmp_path, data_dir)
    result = trainer.run(progress=False)
    assert result["done"] and 0 <= result["val_acc"] <= 1 and 0 <= result["test_acc"] <= 1
    saved = json.loads((tmp_path / "result.json").read_text())
    assert saved["val_acc"] == result["val_acc"] and saved["config"]["epochs"] == 2
    log = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [0, 1, 2, 3] and [r.get("epoch") for r in log] == [None, 1, None, 2]


@pytest.mark.slow
def test_kill_and_resume_equals_uninterrupted(data_dir, tmp_path):
    whole = FinalTrainer(tiny_arch(), TINY, tmp_path / "a", data_dir)
    whole.run(progress=False)
    first = FinalTrainer(tiny_arch(), TINY, tmp_path / "b", data_dir)
    first.run(stop_after=3, progress=False)
    second = FinalTrainer(tiny_arch(), TINY, tmp_path / "b", data_dir)
    assert second.resume() and second.step == 3
    second.run(progress=False)
    for (k, a), b in zip(whole.net.state_dict().items(), second.net.state_dict().values()):
        assert torch.equal(a, b), k
    assert (tmp_path / "a" / "log.jsonl").read_text().count("\n") == (tmp_path / "b" / "log.jsonl").read_text().count("\n")


def test_resume_refuses_other_settings_and_damaged_checkpoints(data_dir, tmp_path):
    FinalTrainer(tiny_arch(), TINY, tmp_path, data_dir).run(stop_after=1, progress=False)
    with pytest.raises(CheckpointError, match="other settings"):
        FinalTrainer(tiny_arch(), replace(TINY, lr=0.1), tmp_path, data_dir).resume()
    with pytest.raises(CheckpointError, match="another architecture"):
        FinalTrainer(tiny_arch(1), TINY, tmp_path, data_dir).resume()
    (tmp_path / "checkpoint.pt").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="cannot resume: checkpoint .*checkpoint.pt is corrupt"):
        FinalTrainer(tiny_arch(), TINY, tmp_path, data_dir).resume()


def test_cli(data_dir, tmp_path, capsys):
    arch_file = tmp_path / "archs.jsonl"
    arch_file.write_text(json.dumps(tiny_arch().meta["cell"]) + "\n")
    common = ["--num-blocks", "3", "--channels", "4", "--epochs", "1", "--batch-size", "32", "--train-images", "64",
              "--val-images", "100", "--data-dir", data_dir, "--quiet"]
    assert main(["train-final", "--arch", str(arch_file), "--out", str(tmp_path / "run"), *common]) == 0
    assert "test accuracy" in capsys.readouterr().out
    assert main(["train-final", "--arch", str(arch_file), "--rank", "3", "--out", str(tmp_path / "x"), *common]) == 2
    assert "out of range" in capsys.readouterr().err
    assert main(["train-final", "--out", str(tmp_path / "x"), *common]) == 2
    assert "exactly one of --arch" in capsys.readouterr().err


def test_final_checkpoints_carry_a_checksum_and_a_damaged_one_is_refused(data_dir, tmp_path):
    """Issue 30: final training saved its state without the checksum GHN training wrote; both now save
    and resume through core.checkpoints (save_state, resume_state)."""
    import torch
    from ghn_ext.core.files import CHECKSUM_KEY, content_digest
    FinalTrainer(tiny_arch(), TINY, tmp_path, data_dir).run(stop_after=1, progress=False)
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert state[CHECKSUM_KEY] == content_digest({k: v for k, v in state.items() if k != CHECKSUM_KEY})
    state["step"] += 1  # contents that no longer match what was saved
    torch.save(state, tmp_path / "checkpoint.pt")
    with pytest.raises(CheckpointError, match="cannot resume: checkpoint .* is damaged"):
        FinalTrainer(tiny_arch(), TINY, tmp_path, data_dir).resume()
