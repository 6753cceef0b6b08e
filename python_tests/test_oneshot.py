"""Tests of ghn_ext.models.oneshot: the one-shot weight-sharing baseline (shapes for both spaces, sharing of
storage between architectures, gradients, checkpoints, errors) and its training through Trainer."""
from __future__ import annotations

import random

import pytest
import torch
import torch.nn.functional as F

from ghn_ext.core.checkpoints import CheckpointError
from ghn_ext.models.ghn import GHNConfig, GraphHyperNetwork
from ghn_ext.nets.network import param_shapes, run_network
from ghn_ext.models.oneshot import OneShotConfig, OneShotModel, concat_columns, weight_keys
from ghn_ext.spaces import classification, make_sampler
from ghn_ext.workflows.train import TrainConfig, Trainer, read_log

CLS = OneShotConfig(num_nodes=5, num_blocks=3, channels=4)
NB = OneShotConfig(space="nb201", channels=4, cells_per_stage=1)


def sampler(cfg: OneShotConfig):
    return make_sampler(cfg.space, cfg.num_nodes, cfg.num_blocks, cfg.channels, cfg.cells_per_stage)


@pytest.mark.parametrize("cfg", [CLS, NB], ids=["classification", "nb201"])
def test_weights_have_the_network_shapes(cfg):
    model, sample = OneShotModel(cfg), sampler(cfg)
    for seed in range(30):
        g = sample(random.Random(seed))
        weights = model(g)
        shapes = param_shapes(g)
        assert weights.keys() == shapes.keys()
        for v, params in shapes.items():
            assert {k: tuple(w.shape) for k, w in weights[v].items()} == {k: tuple(s) for k, s in params.items()}


def test_same_node_and_op_share_storage_and_gradients_reach_them():
    model, sample = OneShotModel(CLS), sampler(CLS)
    a, b = sample(random.Random(0)), sample(random.Random(1))
    wa, wb = model(a), model(b)
    shared = [(v, n) for v in wa for n in wa[v] if v in wb and n in wb[v]
              and a.nodes[v].op == b.nodes[v].op and a.nodes[v].block == b.nodes[v].block]
    assert shared  # stem and classifier at least
    reads_concat = concat_columns(a).keys() | concat_columns(b).keys()  # gathered columns: copies
    assert any(v not in reads_concat for v, _ in shared)
    for v, n in shared:
        if v not in reads_concat:
            assert wa[v][n].untyped_storage().data_ptr() == wb[v][n].untyped_storage().data_ptr()
    x = torch.randn(8, 3, 32, 32)
    loss = F.cross_entropy(run_network(a, x, wa), torch.arange(8) % 10)
    loss.backward()
    used = [p for p in model.shared.values() if p.grad is not None and p.grad.abs().sum() > 0]
    assert len(used) >= len({k for k in wa for _ in wa[k]}) // 2


def test_save_load_roundtrip(tmp_path):
    model = OneShotModel(CLS)
    model.save(tmp_path / "m.pt")
    back = OneShotModel.load(tmp_path / "m.pt")
    assert back.config == CLS
    for k, p in model.shared.items():
        assert torch.equal(p, back.shared[k])


def test_errors(tmp_path):
    GraphHyperNetwork(GHNConfig(tile_channels=4, T=1)).save(tmp_path / "ghn.pt")
    with pytest.raises(CheckpointError, match="not a ghn_ext ghn_ext.oneshot/1 checkpoint"):
        OneShotModel.load(tmp_path / "ghn.pt")
    with pytest.raises(CheckpointError, match="does not exist"):
        OneShotModel.load(tmp_path / "none.pt")
    model = OneShotModel(CLS)
    with pytest.raises(ValueError, match="for the 'classification' space, got a 'nb201'"):
        model(sampler(NB)(random.Random(0)))
    deeper = make_sampler("classification", 5, 6, 4)(random.Random(0))
    with pytest.raises(ValueError, match="outside the one-shot model's skeleton"):
        model(deeper)


def test_trainer_trains_a_oneshot_model(data_dir, tmp_path):
    cfg = TrainConfig(model="oneshot", steps=3, num_nodes=5, num_blocks=3, channels=4, batch_size=16,
                      eval_archs=2, eval_images=100, data_dir=data_dir)
    trainer = Trainer(cfg, tmp_path)
    before = {k: p.detach().clone() for k, p in trainer.ghn.shared.items()}
    trainer.run(progress=False)
    assert isinstance(trainer.ghn, OneShotModel)
    assert any(not torch.equal(before[k], p) for k, p in trainer.ghn.shared.items())
    log = read_log(tmp_path / "train_log.jsonl")
    assert len(log) == 3 and "val_acc" in log[-1]
    saved = OneShotModel.load(tmp_path / "oneshot.pt").config
    assert (saved.space, saved.num_nodes, saved.num_blocks, saved.channels) == ("classification", 5, 3, 4)


def test_a_leaf_meets_the_same_columns_whichever_nodes_are_leaves():
    """A bottleneck or classifier reading a cell's concatenated leaves gets, for leaf j, the shared
    tensor's columns of position j (ENAS), not the first free columns: two cells whose leaf sets
    differ still agree on the columns of a leaf they share."""
    model = OneShotModel(CLS)
    cell_a = classification.Cell(("conv1x1",) * 3, ((0,), (0,), (1,)))        # leaves 0, 1, 2
    cell_b = classification.Cell(("conv1x1",) * 3, ((0,), (2,), (1,)))        # node 0 feeds node 1: leaves 1, 2
    a, b = (classification.cifar_network(c, CLS.num_blocks, CLS.channels) for c in (cell_a, cell_b))
    head = len(a.nodes) - 1
    assert a.nodes[head].op == b.nodes[head].op == "classifier"
    shared = model.shared[weight_keys(a, CLS.input_size)[head, "weight"][0]]
    width = a.nodes[head - 2].channels  # a leaf of the last cell
    for graph, leaves in ((a, [0, 1, 2]), (b, [1, 2])):
        expected = torch.cat([shared[:, j * width:(j + 1) * width] for j in leaves], dim=1)
        torch.testing.assert_close(model(graph)[head]["weight"], expected, rtol=0, atol=0)
    loss = model(b)[head]["weight"].sum()
    loss.backward()
    assert shared.grad[:, :width].abs().sum() == 0 and shared.grad[:, width:3 * width].abs().sum() > 0
