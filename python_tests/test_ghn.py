"""Tests of ghn_ext.models.ghn: the Graph HyperNetwork (weights of the right shapes for both spaces, batching,
gradients, variants, initial activation scale, materialize, checkpoints)."""
from __future__ import annotations

import dataclasses
import math
import os
import random

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from ghn_ext.core.checkpoints import CheckpointError
from ghn_ext.core.checkpoints import load_checkpoint as load_any_checkpoint
from ghn_ext.core.files import atomic_save
from ghn_ext.models.ghn import CHECKPOINT_FORMAT, NUM_FEATURES, EmissionPlan, GHNConfig, GraphHyperNetwork, node_features


def load_checkpoint(path):
    return load_any_checkpoint(path, CHECKPOINT_FORMAT)
from ghn_ext.core.graph import ArchGraph, GraphBatch, Node
from ghn_ext.core.files import with_checksum
from ghn_ext.nets.network import ArchNetwork, Network, param_shapes
from ghn_ext.ops import HAS_EXTENSION
from ghn_ext.core.primitives import OP_INDEX, OP_NAMES, PRIMITIVES
from ghn_ext.spaces import classification, nb201

SMALL = dict(tile_channels=8, T=2)  # small blocks keep every test fast


# ------------------------------------------------------------------------------------------ helpers
def cls_arch(seed: int, num_nodes: int = 7, num_blocks: int = 4, channels: int = 8) -> ArchGraph:
    return classification.sample_architecture(random.Random(seed), num_nodes, num_blocks, channels)


def nb_string(rng: random.Random, connected: bool = False) -> str:
    """A random NAS-Bench-201 cell string; `connected`: its output depends on its input."""
    while True:
        ops = tuple(rng.choice(nb201.OPS) for _ in nb201.EDGES)
        reach = {0}
        for (dst, src), op in zip(nb201.EDGES, ops):  # EDGES are in topological order
            if op != "none" and src in reach:
                reach.add(dst)
        if not connected or 3 in reach:
            return nb201.to_string(ops)


def nb_arch(seed: int, connected: bool = False, cells_per_stage: int = 1) -> ArchGraph:
    return nb201.network(nb_string(random.Random(seed), connected), channels=8, cells_per_stage=cells_per_stage)


def make_ghn(seed: int = 0, **kw) -> GraphHyperNetwork:
    torch.manual_seed(seed)
    return GraphHyperNetwork(GHNConfig(**{**SMALL, **kw}))


def images(n: int = 4, size: int = 16, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def assert_same_weights(a, b, exact=False):
    assert a.keys() == b.keys()
    for v in a:
        assert a[v].keys() == b[v].keys()
        for name in a[v]:
            if exact:
                assert torch.equal(a[v][name], b[v][name]), (v, name)
            else:
                torch.testing.assert_close(a[v][name], b[v][name], rtol=1e-5, atol=1e-6)


def assert_param_shapes(arch: ArchGraph, weights) -> None:
    expected = param_shapes(arch)
    assert set(weights) == set(expected)
    for v, shapes in expected.items():
        assert {n: tuple(t.shape) for n, t in weights[v].items()} == shapes, (v, arch.nodes[v].op)


# ------------------------------------------------------------------------------------------ shapes
@pytest.mark.parametrize("num_nodes", [7, 17])
def test_weight_shapes_classification(num_nodes):
    ghn = make_ghn(T=1)
    for seed in range(3):
        arch = cls_arch(seed, num_nodes)
        assert_param_shapes(arch, ghn(arch))


def test_weight_shapes_nb201():
    ghn = make_ghn(space="nb201", T=1)
    rng = random.Random(3)
    for _ in range(4):
        arch = nb201.network(nb_string(rng), channels=8, cells_per_stage=2)
        weights = ghn(arch)
        assert_param_shapes(arch, weights)
        Network(arch)(images(2, 8), weights)  # and the network runs on them


def test_batch_equals_one_by_one():
    ghn = make_ghn(T=2)
    archs = [cls_arch(0, 7), cls_arch(1, 17), cls_arch(2, 7, num_blocks=3), cls_arch(3, 7, num_blocks=2)]
    with torch.no_grad():
        together = ghn(archs)
        from_batch = ghn(GraphBatch.from_graphs(archs))
        alone = [ghn(a) for a in archs]
    assert isinstance(together, list) and len(together) == len(archs)
    for t, b, a in zip(together, from_batch, alone):
        assert_same_weights(t, a)
        assert_same_weights(b, a)


def test_batch_equals_one_by_one_nb201_no_sharing():
    ghn = make_ghn(space="nb201", T=1, share_params=False, scheme="sync")
    archs = [nb_arch(0), nb_arch(1, cells_per_stage=2), nb_arch(2)]
    with torch.no_grad():
        together, alone = ghn(archs), [ghn(a) for a in archs]
    for t, a in zip(together, alone):
        assert_same_weights(t, a)


# ------------------------------------------------------------------------------------------ gradients
def network_loss(ghn: GraphHyperNetwork, arch: ArchGraph) -> torch.Tensor:
    logits = Network(arch)(images(4), ghn(arch))
    return F.cross_entropy(logits, torch.tensor([0, 1, 2, 3]))


def test_gradients_reach_every_ghn_parameter():
    ghn = make_ghn()
    network_loss(ghn, cls_arch(0)).backward()
    for name, p in ghn.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, f"{name} got no gradient"


def test_no_sharing_trains_one_parameter_set_per_block():
    ghn = make_ghn(share_params=False, max_blocks=8)
    arch = cls_arch(0)  # stem block, 4 cells, classifier block: 6 blocks
    assert arch.num_blocks == 6 and ghn.msg_w1.shape[0] == 8
    network_loss(ghn, arch).backward()
    for name in ("msg_w1", "msg_b2", "gru_w_ih", "gru_b_hh"):
        grad = getattr(ghn, name).grad
        # the classifier block (5) is a single node: it sends no messages, only its GRU updates
        for b in range(5 if name.startswith("msg") else 6):
            assert grad[b].abs().sum() > 0, (name, b)
        assert grad[6:].abs().sum() == 0, name  # sets of blocks the graph does not have
    assert ghn.msg_w1.grad[5].abs().sum() == 0


def test_no_sharing_refuses_too_many_blocks():
    ghn = make_ghn(share_params=False, max_blocks=4)
    with pytest.raises(ValueError, match="more blocks than the 4 parameter sets"):
        ghn(cls_arch(0))


# ------------------------------------------------------------------------------------------ variants
def test_naive_hypernet_has_one_branch_per_op():
    ghn = make_ghn(naive_hypernet=True)
    arch = cls_arch(1)
    assert ghn.hyper_out_w.shape[0] == len(OP_NAMES) == ghn.hyper_out_b.shape[0]
    weights = ghn(arch)
    assert_param_shapes(arch, weights)

    # each node's block comes from its own op's branch
    batch = GraphBatch.from_graphs([arch])
    with torch.no_grad():
        h = ghn.propagate(batch, ghn.initial_embeddings(batch))
        blocks = ghn.blocks(batch, h)
        z = torch.relu(ghn.hyper_in(h))
        for v, node in enumerate(arch.nodes):
            o = OP_INDEX[node.op]
            expected = z[v] @ ghn.hyper_out_w[o].t() + ghn.hyper_out_b[o]
            torch.testing.assert_close(blocks[v].reshape(-1), expected, rtol=1e-5, atol=1e-5)

    # a branch only reaches nodes of its op
    target = next(n.op for n in arch.nodes if n.op in classification.OPS and PRIMITIVES[n.op].params(8, 8))
    with torch.no_grad():
        ghn.hyper_out_b[OP_INDEX[target]] += 1.0
        moved = ghn(arch)
    for v in weights:
        changed = any(not torch.equal(weights[v][k], moved[v][k]) for k in weights[v])
        assert changed == (arch.nodes[v].op == target), (v, arch.nodes[v].op)

    # gradients reach exactly the branches of the ops that have weights in this architecture
    ghn.zero_grad()
    network_loss(ghn, arch).backward()
    with_weights = {arch.nodes[v].op for v in param_shapes(arch)}
    for op in OP_NAMES:
        reached = ghn.hyper_out_w.grad[OP_INDEX[op]].abs().sum() > 0
        assert bool(reached) == (op in with_weights), op


def test_pass_embedding_off_changes_only_later_blocks():
    on = make_ghn(seed=3)
    off = GraphHyperNetwork(GHNConfig(**{**SMALL, "pass_embedding": False}))
    off.load_state_dict(on.state_dict())
    arch = cls_arch(4)
    with torch.no_grad():
        w_on, w_off = on(arch), off(arch)
    assert_param_shapes(arch, w_off)
    for v in w_on:
        same = all(torch.equal(w_on[v][k], w_off[v][k]) for k in w_on[v])
        assert same == (arch.nodes[v].block == 0), (v, arch.nodes[v].block)
    Network(arch)(images(2), w_off)


@pytest.mark.parametrize("kw", [dict(share_params=False), dict(pass_embedding=False),
                                dict(share_params=False, pass_embedding=False), dict(scheme="sync")])
def test_variants_run_and_train(kw):
    ghn = make_ghn(T=1, **kw)
    arch = cls_arch(5)
    loss = network_loss(ghn, arch)
    loss.backward()
    assert torch.isfinite(loss)
    assert ghn.gru_w_ih.grad.abs().sum() > 0 and ghn.hyper_out_w.grad.abs().sum() > 0


def test_unknown_scheme_in_config():
    with pytest.raises(ValueError, match="unknown propagation scheme"):
        GHNConfig(scheme="async")


# ------------------------------------------------------------------------------------------ init scale
class _Recorder(TorchFunctionMode):
    """Standard deviation of every conv2d output (before BatchNorm) and of the classifier's input."""

    def __init__(self):
        super().__init__()
        self.conv, self.pooled = [], []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func is F.conv2d:
            self.conv.append(out.std().item())
        elif func is F.linear:
            self.pooled.append(args[0].std().item())
        return out


@pytest.mark.parametrize("space", ["classification", "nb201"])
def test_fresh_ghn_activations_neither_vanish_nor_explode(space):
    for seed in range(3):
        ghn = make_ghn(seed=seed, space=space)
        arch = cls_arch(seed) if space == "classification" else nb_arch(seed, connected=True)
        with torch.no_grad():
            weights = ghn(arch)
            with _Recorder() as rec:
                logits = Network(arch)(images(8, seed=seed), weights)
        conv = sorted(rec.conv)
        assert 0.05 < logits.std().item() < 20, (space, seed, logits.std().item())
        assert 0.05 < rec.pooled[-1] < 20, (space, seed, rec.pooled)  # the classifier's input
        assert 0.05 < conv[len(conv) // 2] < 20, (space, seed, conv)
        assert 0.05 < rec.conv[0] < 20, (space, seed, rec.conv[0])   # the stem


def test_fresh_ghn_weights_are_near_he_initialisation():
    """With unit-variance blocks and the plan's fan-in scales, weights start near He init."""
    ghn = make_ghn(seed=1)
    arch = cls_arch(1, channels=16)
    with torch.no_grad():
        weights = ghn(arch)
    for v, ws in weights.items():
        gain = 1.0 if arch.nodes[v].op == "classifier" else math.sqrt(2.0)
        for name, w in ws.items():
            if w.dim() < 2 or w.numel() < 64:
                continue
            he = gain / math.sqrt(math.prod(w.shape[1:]))
            ratio = w.std().item() / he
            assert 0.3 < ratio < 3, (v, arch.nodes[v].op, name, ratio)


# ------------------------------------------------------------------------------------------ plan, features
def test_emission_plan_anchors_and_scales():
    nodes = [Node("input", 0, 3), Node("stem_conv", 0, 8), Node("sep_conv3x3", 0, 16),
             Node("conv1x7_7x1", 0, 16), Node("classifier", 1, 10)]
    arch = ArchGraph(nodes, [(0, 1), (1, 2), (2, 3), (3, 4)]).validate()
    K = 7
    plan = EmissionPlan.build([arch], [5], K, (3, 32, 32))
    rows = {(k[1], k[2]): (plan.node_index[t], tuple(plan.shapes[4 * t:4 * t + 4]),
                           tuple(plan.anchors[2 * t:2 * t + 2]), plan.scales[t])
            for t, k in enumerate(plan.keys)}
    r2 = math.sqrt(2.0)
    assert rows[(1, "weight")] == (6, (8, 3, 3, 3), (0, 0), pytest.approx(r2 / math.sqrt(27)))
    assert rows[(2, "depthwise")] == (7, (8, 1, 3, 3), (0, 0), pytest.approx(r2 / 3))
    assert rows[(2, "pointwise")] == (7, (16, 8, 1, 1), (K - 1, K - 1), pytest.approx(r2 / math.sqrt(8)))
    assert rows[(3, "weight_1x7")] == (8, (16, 16, 1, 7), (0, 0), pytest.approx(r2 / math.sqrt(16 * 7)))
    assert rows[(3, "weight_7x1")] == (8, (16, 16, 7, 1), (0, K - 1), pytest.approx(r2 / math.sqrt(16 * 7)))
    assert rows[(4, "weight")] == (9, (10, 16, 1, 1), (0, 0), pytest.approx(1 / 4))
    assert rows[(4, "bias")] == (9, (10, 1, 1, 1), (K - 1, K - 1), pytest.approx(1 / 4))
    assert [k[0] for k in plan.keys] == [0] * len(plan.keys)


def test_node_features_are_one_hots():
    f = node_features(Node("sep_conv3x3", 1, 16, stride=2))
    assert len(f) == NUM_FEATURES and sum(f) == 3  # op, stride, scale (exit flag off)
    assert f[OP_INDEX["sep_conv3x3"]] == 1
    assert node_features(Node("conv1x1", exit=True))[-1] == 1


# ------------------------------------------------------------------------------------------ materialize
def test_materialize_equals_network_on_generated_weights():
    ghn = make_ghn()
    arch = cls_arch(2)
    model = ghn.materialize(arch)
    assert isinstance(model, nn.Module) and isinstance(model, ArchNetwork)
    x = images(4)
    with torch.no_grad():
        expected = Network(arch)(x, ghn(arch))
        got = model(x)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    params = list(model.parameters())
    assert params and all(p.is_leaf and p.requires_grad for p in params)
    model(x).sum().backward()  # trainable on its own, detached from the GHN
    assert all(p.grad is not None for p in params) and ghn.hyper_out_w.grad is None


# ------------------------------------------------------------------------------------------ checkpoints
def test_save_load_round_trip(tmp_path):
    ghn = make_ghn(seed=5, hidden=16, message_hidden=8, hyper_hidden=24, scheme="sync", naive_hypernet=True)
    path = tmp_path / "sub" / "ghn.pt"
    ghn.save(path, extra={"epoch": 3})
    loaded = GraphHyperNetwork.load(path, space="classification")
    assert loaded.config == ghn.config
    assert loaded.state_dict().keys() == ghn.state_dict().keys()
    for k, t in ghn.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], t), k
    arch = cls_arch(6)
    with torch.no_grad():
        assert_same_weights(loaded(arch), ghn(arch), exact=True)
    assert load_checkpoint(path)["epoch"] == 3
    assert os.listdir(path.parent) == ["ghn.pt"]


def test_load_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        GraphHyperNetwork.load(tmp_path / "nope.pt")


def test_load_corrupt_file(tmp_path):
    path = tmp_path / "corrupt.pt"
    path.write_bytes(random.Random(0).randbytes(4096))
    with pytest.raises(CheckpointError, match="corrupt or not a ghn_ext checkpoint"):
        GraphHyperNetwork.load(path)


def test_load_truncated_checkpoint(tmp_path):
    path = tmp_path / "ghn.pt"
    make_ghn().save(path)
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="corrupt or not a ghn_ext checkpoint"):
        GraphHyperNetwork.load(path)


@pytest.mark.parametrize("obj", [{"a": 1}, torch.zeros(3), [1, 2], {"format": "other/1"}])
def test_load_non_ghn_torch_file(tmp_path, obj):
    path = tmp_path / "other.pt"
    torch.save(obj, path)
    with pytest.raises(CheckpointError, match="is not a ghn_ext GHN checkpoint"):
        GraphHyperNetwork.load(path)


def test_load_checkpoint_with_broken_contents(tmp_path):
    ghn = make_ghn()
    ckpt = load_checkpoint_after_save(ghn, tmp_path)
    del ckpt["state_dict"]["hyper_in.weight"]
    path = tmp_path / "broken.pt"
    torch.save(with_checksum(ckpt), path)  # written consistently: the contents are what is wrong
    with pytest.raises(CheckpointError, match="does not hold a valid GHN"):
        GraphHyperNetwork.load(path)


@pytest.mark.parametrize("field,value", [("T", 2 ** 62), ("T", 0), ("tile_channels", 0), ("hidden", -1)])
def test_load_checkpoint_with_absurd_sizes_is_refused(tmp_path, field, value):
    """Issue 29: a ghn.pt whose config held T = 2**62 made `ghn score` segfault."""
    ckpt = load_checkpoint_after_save(make_ghn(), tmp_path)
    ckpt["config"][field] = value
    path = tmp_path / "absurd.pt"
    torch.save(with_checksum(ckpt), path)  # written consistently: the contents are what is wrong
    with pytest.raises(CheckpointError, match=rf"GHN {field} must be an integer in \[1, \d+\], got {value}"):
        GraphHyperNetwork.load(path)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_load_checkpoint_with_non_finite_parameters_is_refused(tmp_path, bad):
    """Issue 29: a NaN checkpoint ranked every architecture at 0.1 without a word."""
    ckpt = load_checkpoint_after_save(make_ghn(), tmp_path)
    ckpt["state_dict"]["hyper_in.weight"][0, 0] = bad
    path = tmp_path / "nan.pt"
    torch.save(with_checksum(ckpt), path)  # written consistently: the contents are what is wrong
    with pytest.raises(CheckpointError, match="non-finite values .* in hyper_in.weight"):
        GraphHyperNetwork.load(path)


def load_checkpoint_after_save(ghn, tmp_path):
    path = tmp_path / "good.pt"
    ghn.save(path)
    return load_checkpoint(path)


def test_load_checkpoint_of_another_space(tmp_path):
    path = tmp_path / "ghn.pt"
    make_ghn().save(path)
    with pytest.raises(CheckpointError, match="GHN for the 'classification' space, not 'nb201'"):
        GraphHyperNetwork.load(path, space="nb201")
    assert GraphHyperNetwork.load(path).config.space == "classification"


def legacy_checkpoint(ghn, path):
    """`ghn` saved as a GHN was before "norm_relu" joined the vocabulary: no op_names, one op fewer in
    the embedding's one-hot columns and in a naive hypernet's branches."""
    state = ghn.state_dict()
    drop = OP_INDEX["norm_relu"]
    keep = [i for i in range(state["embed.weight"].shape[1]) if i != drop]
    state["embed.weight"] = state["embed.weight"][:, keep].clone()
    for key in ("hyper_out_w", "hyper_out_b"):
        if state[key].shape[0] > 1:
            state[key] = state[key][[i for i in range(len(OP_NAMES)) if i != drop]].clone()
    torch.save({"format": "ghn_ext.ghn/1", "config": dataclasses.asdict(ghn.config), "state_dict": state}, path)


@pytest.mark.parametrize("naive", [False, True])
def test_checkpoint_of_the_older_vocabulary_loads_and_generates_the_same_weights(tmp_path, naive):
    ghn = make_ghn(naive_hypernet=naive)
    with torch.no_grad():  # an op the old GHN never saw has no embedding and no branch
        ghn.embed.weight[:, OP_INDEX["norm_relu"]] = 0
        if naive:
            ghn.hyper_out_w[OP_INDEX["norm_relu"]] = 0
            ghn.hyper_out_b[OP_INDEX["norm_relu"]] = 0
    legacy_checkpoint(ghn, tmp_path / "old.pt")
    loaded = GraphHyperNetwork.load(tmp_path / "old.pt")
    for key, value in ghn.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    arch = cls_arch(3)
    assert_same_weights(loaded(arch), ghn(arch), exact=True)
    loaded.save(tmp_path / "new.pt")  # and it is saved with its vocabulary from now on
    assert load_checkpoint(tmp_path / "new.pt")["op_names"] == list(OP_NAMES)


@pytest.mark.parametrize("where", [0.5, 0.75, 0.9])
def test_checkpoint_with_a_flipped_byte_is_refused(tmp_path, where):
    """Issue 29: a checkpoint with flipped bytes loaded without complaint (torch.load reads a changed
    tensor byte silently; the checksum saved with the contents does not match it)."""
    path = tmp_path / "ghn.pt"
    make_ghn().save(path)
    data = bytearray(path.read_bytes())
    data[int(len(data) * where)] ^= 0x40
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="damaged|corrupt"):
        GraphHyperNetwork.load(path)


def test_checkpoint_naming_an_unknown_op_is_refused(tmp_path):
    path = tmp_path / "future.pt"
    make_ghn().save(path)
    ckpt = load_checkpoint(path)
    ckpt["op_names"] = ckpt["op_names"][:-1] + ["hyper_conv"]
    torch.save(with_checksum(ckpt), path)  # written consistently: the contents are what is wrong
    with pytest.raises(CheckpointError, match="ops this version does not know: \\['hyper_conv'\\]"):
        GraphHyperNetwork.load(path)


def test_ghn_refuses_an_architecture_of_another_space():
    cls_ghn, nb_ghn = make_ghn(T=1), make_ghn(space="nb201", T=1)
    with pytest.raises(ValueError, match="built for the 'classification' space, got a 'nb201' architecture"):
        cls_ghn(nb_arch(0))
    with pytest.raises(ValueError, match="built for the 'nb201' space"):
        nb_ghn([nb_arch(0), cls_arch(0)])
    with pytest.raises(ValueError, match="built for the 'classification' space"):
        cls_ghn.materialize(nb_arch(0))
    custom = ArchGraph([Node("input", 0, 3), Node("stem_conv", 0, 4), Node("classifier", 1, 10)],
                       [(0, 1), (1, 2)])  # space "custom" is accepted by every GHN
    assert_param_shapes(custom, cls_ghn(custom))


def test_atomic_save_leaves_no_temp_files_and_keeps_old_file_on_failure(tmp_path, monkeypatch):
    path = tmp_path / "ghn.pt"
    first = make_ghn(seed=1)
    first.save(path)
    make_ghn(seed=2).save(path)  # overwriting works and leaves only the file itself
    assert os.listdir(tmp_path) == ["ghn.pt"]
    first.save(path)
    before = path.read_bytes()

    def broken_save(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        make_ghn(seed=3).save(path)
    with pytest.raises(OSError, match="disk full"):
        atomic_save({"x": 1}, tmp_path / "new.pt")
    monkeypatch.undo()

    assert sorted(os.listdir(tmp_path)) == ["ghn.pt"]  # no temp file, no half-written new file
    assert path.read_bytes() == before
    loaded = GraphHyperNetwork.load(path)
    for k, t in first.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], t), k


# ------------------------------------------------------------------------------------------ compiled ops
@pytest.mark.skipif(not HAS_EXTENSION, reason="compiled extension ghn_ext._C not built")
def test_training_step_on_compiled_ops_matches_reference_step(monkeypatch):
    """One Adam step of the GHN (hidden 32: the kernels' specialised path) on the compiled propagation
    and emission ops equals the same step on the pure-PyTorch references: loss, every gradient, and
    the parameters after the update."""
    archs = [cls_arch(1, num_nodes=5), cls_arch(2, num_nodes=7, num_blocks=3)]
    x, y = images(8), torch.arange(8) % 10

    def step(reference: bool):
        monkeypatch.setenv("GHN_EXT_REFERENCE", "1" if reference else "0")
        ghn = make_ghn(seed=3, hidden=32, message_hidden=32)
        opt = torch.optim.Adam(ghn.parameters(), lr=1e-3)
        loss = sum(F.cross_entropy(Network(g)(x, w), y) for g, w in zip(archs, ghn(archs)))
        loss.backward()
        grads = {n: p.grad.clone() for n, p in ghn.named_parameters()}
        opt.step()
        return loss.detach(), grads, dict(ghn.named_parameters())

    loss_k, grads_k, params_k = step(reference=False)
    loss_r, grads_r, params_r = step(reference=True)
    torch.testing.assert_close(loss_k, loss_r, rtol=1e-5, atol=1e-6)
    for name in grads_r:
        scale = grads_r[name].abs().max().item()
        torch.testing.assert_close(grads_k[name], grads_r[name], rtol=1e-3, atol=1e-4 * scale + 1e-9,
                                   msg=lambda m: f"gradient of {name}: {m}")
        # Adam's first step moves each parameter by about lr * sign(grad): entries whose gradient is
        # rounding noise may move either way, so compare them at that size
        torch.testing.assert_close(params_k[name], params_r[name], rtol=0, atol=2e-3,
                                   msg=lambda m: f"parameter {name} after the step: {m}")


# ------------------------------------------------------------------------------------------ weight scale
def test_predictions_do_not_depend_on_the_scale_of_generated_weights():
    """Every generated convolution of the classification space reaches BatchNorm (batch statistics when
    the GHN scores) before anything adds to it, and the classifier's logits only scale with its
    weights: a positive factor per node changes the logits only through BatchNorm's eps, so
    normalising the scale of generated weights cannot change a score (issue 6's question about
    normalisation); a perturbation of their direction of the same size does."""
    arch = cls_arch(4, num_nodes=7, num_blocks=3)
    weights = make_ghn(seed=1).double()(arch)
    rng = torch.Generator().manual_seed(0)
    factors = {v: float(torch.empty(()).uniform_(0.2, 5.0, generator=rng)) for v in weights}
    scaled = {v: {name: w * factors[v] for name, w in ws.items()} for v, ws in weights.items()}
    noisy = {v: {name: w + 0.5 * w.std() * torch.randn(w.shape, generator=rng, dtype=w.dtype)
                 for name, w in ws.items()} for v, ws in weights.items()}
    x = images(64).double()
    head = next(v for v, n in enumerate(arch.nodes) if PRIMITIVES[n.op].combine == "head")
    logits = Network(arch)(x, weights)
    size = logits.abs().max()
    scale_change = (Network(arch)(x, scaled) / factors[head] - logits).abs().max()
    direction_change = (Network(arch)(x, noisy) - logits).abs().max()
    assert scale_change < 1e-3 * size < direction_change * 1e-2


# ------------------------------------------------------------------------------------------ scoring
def test_network_logits_gives_the_accuracy_and_leaves_grad_mode_to_the_caller():
    """The scoring loop yields batch by batch; no_grad must hold only inside it, not leak to the code
    between two batches (a with-block in a generator would leave it switched off there)."""
    from ghn_ext.core.data import Split
    from ghn_ext.workflows.evaluate import network_accuracy, network_logits

    arch = cls_arch(5, num_nodes=5, num_blocks=3)
    weights = make_ghn(seed=2)(arch)
    split = Split((torch.rand(250, 3, 32, 32) * 255).to(torch.uint8), torch.randint(0, 10, (250,)))
    right, sizes = 0, []
    for logits, y in network_logits(arch, weights, split, image_batch=100):
        assert torch.is_grad_enabled() and not logits.requires_grad
        right += int((logits.argmax(1) == y).sum())
        sizes.append(len(y))
    assert sizes == [100, 100, 50]
    assert network_accuracy(arch, weights, split, image_batch=100) == right / 250
