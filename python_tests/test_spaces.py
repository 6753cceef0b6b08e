"""Tests of the search spaces: the paper's classification space (appendix 7.1) and NAS-Bench-201."""
from __future__ import annotations

import random
import time

import pytest

from ghn_ext import spaces
from ghn_ext.core.graph import ArchGraph, GraphError
from ghn_ext.nets.network import count_flops, infer_shapes
from ghn_ext.core.primitives import PRIMITIVES
from ghn_ext.spaces import anytime
from ghn_ext.spaces import classification as cls_space
from ghn_ext.spaces import nb201
from ghn_ext.spaces.classification import Cell


# --------------------------------------------------------------------------------- helpers
def cell_blocks(g: ArchGraph):
    """For a classification macro graph: per cell block, (bottleneck_prev, bottleneck_prev2,
    intermediate node ids, concat id)."""
    out = []
    for start, end in g.block_ranges()[1:-1]:
        ids = list(range(start, end))
        assert g.nodes[ids[0]].op == g.nodes[ids[1]].op == "bottleneck"
        assert g.nodes[ids[-1]].op == "concat"
        out.append((ids[0], ids[1], ids[2:-1], ids[-1]))
    return out


SMALL_CELL = Cell(("sep_conv3x3", "max_pool3x3"), ((0, 1), (0, 2)))


# --------------------------------------------------------------------------------- classification: cells
def test_ops_are_the_appendix_vocabulary():
    assert cls_space.OPS == ("identity", "conv1x1", "sep_conv3x3", "sep_conv5x5", "dil_sep_conv3x3",
                             "dil_sep_conv5x5", "conv1x7_7x1", "max_pool3x3", "avg_pool3x3")
    assert all(op in PRIMITIVES for op in cls_space.OPS)
    assert (cls_space.TRAIN_NODES, cls_space.EVAL_NODES) == (7, 17)


def test_sample_cell_is_deterministic_by_seed():
    for n in (7, 17):
        for seed in range(5):
            assert cls_space.sample_cell(random.Random(seed), n) == cls_space.sample_cell(random.Random(seed), n)
        distinct = {cls_space.sample_cell(random.Random(seed), n) for seed in range(20)}
        assert len(distinct) == 20
    assert cls_space.sample_cell(random.Random(3)) == cls_space.sample_cell(random.Random(3), 7)


@pytest.mark.parametrize("num_nodes", [cls_space.TRAIN_NODES, cls_space.EVAL_NODES])
def test_sampled_cells_are_valid(num_nodes):
    rng = random.Random(num_nodes)
    ops_seen = set()
    for _ in range(300):
        cell = cls_space.sample_cell(rng, num_nodes)
        assert len(cell.ops) == len(cell.inputs) == num_nodes
        ops_seen |= set(cell.ops)
        used = set()
        for j, ins in enumerate(cell.inputs):
            assert cell.ops[j] in cls_space.OPS
            assert 1 <= len(ins) <= 3 and len(set(ins)) == len(ins)
            assert all(0 <= i < j + 2 for i in ins)
            assert list(ins) == sorted(ins)
            used |= set(ins)
        assert {0, 1} <= used                                    # both inputs used
        leaves = [j for j in range(num_nodes) if j + 2 not in used]
        assert cell.leaves == leaves and leaves                  # last node is always a leaf
        assert leaves[-1] == num_nodes - 1
    assert ops_seen == set(cls_space.OPS)


def test_sampled_cells_build_valid_graphs_with_leaves_concatenated():
    rng = random.Random(0)
    for num_nodes in (7, 17):
        for _ in range(20):
            cell = cls_space.sample_cell(rng, num_nodes)
            g = cls_space.cifar_network(cell, num_blocks=3, channels=4)
            assert g.validate() is g
            preds = g.predecessors()
            for b0, b1, inter, concat in cell_blocks(g):
                assert [g.nodes[v].op for v in inter] == list(cell.ops)
                assert preds[concat] == [inter[j] for j in cell.leaves]
                for j, v in enumerate(inter):
                    base = [b0, b1] + inter
                    assert preds[v] == sorted(base[i] for i in cell.inputs[j])


@pytest.mark.parametrize("ops,inputs,match", [
    (("conv3x3",), ((0, 1),), r"cell node 0: unknown op 'conv3x3'"),
    (("zero",), ((0, 1),), "unknown op"),
    (("identity", "conv1x1"), ((0, 1), (0, 4)), r"cell node 1: inputs \[0, 4\] must be distinct and in \[0, 3\)"),
    (("identity", "conv1x1"), ((0, 1), (3,)), r"cell node 1: inputs \[3\]"),  # reads itself
    (("identity",), ((-1, 1),), "must be distinct"),
    (("identity",), ((1, 1, 0),), "must be distinct"),
    (("identity",), ((),), "must be distinct"),
    (("identity", "conv1x1"), ((0,), (0, 2)), "both cell inputs must be read"),
    (("identity", "conv1x1"), ((1,), (2,)), "both cell inputs must be read"),
    ((), (), "at least one node"),
    (("identity",), ((0, 1), (0,)), "one input list per op"),
])
def test_cell_validation_errors(ops, inputs, match):
    with pytest.raises(GraphError, match=match):
        Cell(ops, inputs)


def test_cell_dict_round_trip_and_errors():
    cell = cls_space.sample_cell(random.Random(1), 7)
    assert Cell.from_dict(cell.to_dict()) == cell
    assert Cell.from_dict({"ops": ["identity"], "inputs": [["0", "1"]]}) == Cell(("identity",), ((0, 1),))
    for bad in ({"ops": ["identity"]}, {"ops": ["identity"], "inputs": [["x"]]}, {"ops": 3, "inputs": [[0, 1]]},
                {"ops": ["identity"], "inputs": [[0, 5]]}):
        with pytest.raises(GraphError):
            Cell.from_dict(bad)


# --------------------------------------------------------------------------------- classification: networks
def test_cifar_network_b18_structure():
    F = 32
    cell = cls_space.sample_cell(random.Random(11), 7)
    g = cls_space.cifar_network(cell)                 # B = 18, F = 32
    assert g.space == "classification"
    assert g.meta == {"cell": cell.to_dict(), "macro": "cifar", "num_blocks": 18, "channels": 32}
    assert g.num_blocks == 20                         # stem, 18 cells, classifier
    shapes = infer_shapes(g, (3, 32, 32))
    assert [n.op for n in g.nodes[:2]] == ["input", "stem_conv"]
    assert (shapes[1].channels, shapes[1].height) == (F, 32)
    blocks = cell_blocks(g)
    assert len(blocks) == 18
    nl = len(cell.leaves)
    for b, (b0, b1, inter, concat) in enumerate(blocks):
        stage = 0 if b < 6 else 1 if b < 12 else 2    # reductions after 1/3 and 2/3 of the cells
        size, width = 32 >> stage, F << stage
        for v in (b0, b1, *inter):
            assert (shapes[v].channels, shapes[v].height, shapes[v].width) == (width, size, size), (b, v)
        assert (shapes[concat].channels, shapes[concat].height) == (width * nl, size)
    head = len(g) - 1
    assert g.nodes[head].op == "classifier" and g.predecessors()[head] == [blocks[-1][3]]
    assert (shapes[head].channels, shapes[head].height) == (10, 1)


def test_cifar_bottleneck_strides():
    cell = cls_space.sample_cell(random.Random(2), 7)
    g = cls_space.cifar_network(cell, num_blocks=18, channels=8)
    shapes = infer_shapes(g)
    preds = g.predecessors()
    blocks = cell_blocks(g)
    outputs = [1, 1] + [c for *_, c in blocks]         # stem feeds the first cell twice
    for b, (b0, b1, _, _) in enumerate(blocks):
        assert preds[b0] == [outputs[b + 1]] and preds[b1] == [outputs[b]]  # i-1 and i-2
        assert g.nodes[b0].stride == (2 if b in (6, 12) else 1)
        assert g.nodes[b1].stride == (2 if b in (6, 7, 12, 13) else 1)
        for bott in (b0, b1):   # stride brings the input to the block's resolution
            src = shapes[preds[bott][0]]
            assert src.height == shapes[bott].height * g.nodes[bott].stride
        assert shapes[b0].height == shapes[b1].height


@pytest.mark.parametrize("num_blocks,reductions", [(1, []), (2, [1]), (3, [1, 2]), (6, [2, 4]), (9, [3, 6])])
def test_cifar_network_small_block_counts(num_blocks, reductions):
    g = cls_space.cifar_network(SMALL_CELL, num_blocks=num_blocks, channels=4)
    shapes = infer_shapes(g)
    sizes = [shapes[c].height for *_, c in cell_blocks(g)]
    expected, s = [], 32
    for b in range(num_blocks):
        s //= 2 if b in reductions else 1
        expected.append(s)
    assert sizes == expected


def test_cifar_network_errors():
    with pytest.raises(GraphError, match="positive"):
        cls_space.cifar_network(SMALL_CELL, num_blocks=0)
    with pytest.raises(GraphError, match="positive"):
        cls_space.cifar_network(SMALL_CELL, channels=0)


def test_imagenet_mobile_spatial_sizes():
    c = 6
    g = cls_space.imagenet_mobile_network(SMALL_CELL, c)
    assert g.meta["macro"] == "imagenet_mobile"
    assert g.nodes[-1].channels == 1000
    shapes = infer_shapes(g, (3, 224, 224))
    assert shapes[1].height == 112 and g.nodes[1].stride == 2     # stride-2 stem
    blocks = cell_blocks(g)
    assert len(blocks) == 14
    sizes = [shapes[concat].height for *_, concat in blocks]
    assert sizes == [112, 56, 28, 28, 28, 28, 14, 14, 14, 14, 7, 7, 7, 7]
    widths = [shapes[b0].channels for b0, *_ in blocks]
    assert widths == [c, 2 * c, 4 * c, 4 * c, 4 * c, 4 * c, 8 * c, 8 * c, 8 * c, 8 * c] + [16 * c] * 4
    # block 2's i-2 input comes from block 0 at 112: its bottleneck strides by 4
    assert g.nodes[blocks[2][1]].stride == 4
    for b0, b1, _, _ in blocks:
        assert shapes[b0] == shapes[b1]
    assert shapes[-1].channels == 1000


def test_widest_mobile_channels_is_the_largest_under_budget():
    budget = 600e6

    def mult_adds(c):
        return count_flops(cls_space.imagenet_mobile_network(SMALL_CELL, c), (3, 224, 224)) / 2

    c = cls_space.widest_mobile_channels(SMALL_CELL, budget)
    assert c >= 1
    assert mult_adds(c) <= budget < mult_adds(c + 1)


def test_widest_mobile_channels_errors_when_nothing_fits():
    with pytest.raises(ValueError, match="even 1 channel"):
        cls_space.widest_mobile_channels(SMALL_CELL, max_mult_adds=1e3, image_size=64)


def test_classification_sample_architecture():
    g = cls_space.sample_architecture(random.Random(5), num_nodes=4, num_blocks=3, channels=8)
    assert len(g.meta["cell"]["ops"]) == 4 and g.meta["num_blocks"] == 3 and g.meta["channels"] == 8
    assert g == cls_space.sample_architecture(random.Random(5), num_nodes=4, num_blocks=3, channels=8)
    full = cls_space.sample_architecture(random.Random(5))
    assert full.meta["num_blocks"] == 18 and len(full.meta["cell"]["ops"]) == 7


# --------------------------------------------------------------------------------- spaces/__init__
def test_spaces_dispatch():
    assert spaces.SPACES == ("classification", "nb201", "anytime")
    c = spaces.sample_architecture("anytime", random.Random(3), channels=4, num_exits=3)
    assert c.space == "anytime" and c == anytime.sample_architecture(random.Random(3), channels=4, num_exits=3)
    a = spaces.sample_architecture("nb201", random.Random(3))
    assert a.space == "nb201" and a == nb201.sample_architecture(random.Random(3))
    b = spaces.sample_architecture("classification", random.Random(3), num_nodes=3, num_blocks=2, channels=4)
    assert b.space == "classification"
    assert b == cls_space.sample_architecture(random.Random(3), num_nodes=3, num_blocks=2, channels=4)
    with pytest.raises(ValueError, match="unknown search space 'imagenet'"):
        spaces.sample_architecture("imagenet", random.Random(0))


def test_nb201_uniform_sampling_is_unchanged_by_the_weights_option():
    """op_weights=None draws exactly the cells it always drew (runs and searches stay reproducible)."""
    rng_a, rng_b = random.Random(5), random.Random(5)
    assert [nb201.sample_ops(rng_a) for _ in range(20)] == [nb201.sample_ops(rng_b, None) for _ in range(20)]


def test_nb201_op_weights_set_how_often_each_op_is_drawn():
    rng = random.Random(0)
    weights = {"nor_conv_3x3": 3, "skip_connect": 1}  # left out: none, nor_conv_1x1, avg_pool_3x3 never drawn
    drawn = [op for _ in range(2000) for op in nb201.sample_ops(rng, weights)]
    assert set(drawn) == {"nor_conv_3x3", "skip_connect"}
    assert abs(drawn.count("nor_conv_3x3") / len(drawn) - 0.75) < 0.02
    sampler = spaces.make_sampler("nb201", channels=4, cells_per_stage=1, op_weights={"nor_conv_1x1": 1})
    assert nb201.cell_ops(sampler(random.Random(1))) == ("nor_conv_1x1",) * 6


@pytest.mark.parametrize("weights, match", [
    ({"conv3x3": 1}, "unknown op 'conv3x3' in the op weights"),
    ({"none": -1}, r"weight of none must be a finite number >= 0, got -1"),
    ({"none": float("nan")}, "weight of none must be a finite number"),
    ({"none": "2"}, "weight of none must be a finite number"),
    ({"none": 0, "skip_connect": 0.0}, "at least one op needs a positive weight"),
    ({}, "non-empty mapping"),
])
def test_nb201_op_weights_errors(weights, match):
    with pytest.raises(GraphError, match=match):
        nb201.sample_ops(random.Random(0), weights)


def test_op_weights_belong_to_nb201_only():
    with pytest.raises(ValueError, match="op weights apply to the nb201 space only, not 'classification'"):
        spaces.make_sampler("classification", op_weights={"none": 1})


# --------------------------------------------------------------------------------- NAS-Bench-201: strings
BEST = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|"
FIRST = "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|"
SECOND = "|none~0|+|none~0|none~1|+|none~0|none~1|skip_connect~2|"
LAST = ("|avg_pool_3x3~0|+|avg_pool_3x3~0|avg_pool_3x3~1|+"
        "|avg_pool_3x3~0|avg_pool_3x3~1|avg_pool_3x3~2|")


def test_parse_and_to_string():
    ops = nb201.parse(BEST)
    assert ops == ("nor_conv_3x3", "nor_conv_3x3", "nor_conv_3x3", "skip_connect", "nor_conv_3x3", "nor_conv_3x3")
    assert nb201.to_string(ops) == BEST
    assert nb201.parse("  " + BEST + "\n") == ops        # surrounding whitespace is tolerated


@pytest.mark.parametrize("arch,match", [
    (BEST.replace("skip_connect", "sep_conv_3x3"), "unknown op 'sep_conv_3x3'"),
    (BEST.replace("nor_conv_3x3~0|+", "conv~0|+", 1), "unknown op 'conv'"),
    ("|none~0|+|none~0|none~1|", r"expected 3 '\+'-separated nodes"),
    (FIRST + "+|none~0|", "expected 3"),
    ("|none~0|none~1|+|none~0|none~1|+|none~0|none~1|none~2|", "node 1 .* needs 1 incoming edges, has 2"),
    ("|none~0|+|none~0|+|none~0|none~1|none~2|", "node 2 .* needs 2 incoming edges, has 1"),
    ("|none~0|+|none~0|none~1|+|none~0|none~1|", "node 3 .* needs 3 incoming edges, has 2"),
    ("none~0+|none~0|none~1|+|none~0|none~1|none~2|", "must be enclosed in '|'"),
    ("|none~0|+|none~0|none~1+|none~0|none~1|none~2|", "must be enclosed"),
    ("|none0|+|none~0|none~1|+|none~0|none~1|none~2|", r"bad edge 'none0'"),
    ("|none~|+|none~0|none~1|+|none~0|none~1|none~2|", "bad edge"),
    ("|None~0|+|none~0|none~1|+|none~0|none~1|none~2|", "bad edge"),
    ("|none~0 |+|none~0|none~1|+|none~0|none~1|none~2|", "bad edge"),
    ("|none~0\n|+|none~0|none~1|+|none~0|none~1|none~2|", "bad edge"),
    ("|none~1|+|none~0|none~1|+|none~0|none~1|none~2|", r"bad edge 'none~1' .*expected 'op~0'"),
    ("|none~0|+|none~1|none~0|+|none~0|none~1|none~2|", r"expected 'op~0'"),
    ("|none~0|+|none~0|none~1|+|none~0|none~1|none~3|", r"expected 'op~2'"),
    ("", "expected 3"),
])
def test_parse_errors(arch, match):
    with pytest.raises(GraphError, match=match):
        nb201.parse(arch)


def test_parse_rejects_non_strings():
    with pytest.raises(GraphError, match="must be a string"):
        nb201.parse(("none",) * 6)  # type: ignore[arg-type]


@pytest.mark.parametrize("ops", [("none",) * 5, ("none",) * 7, ("none",) * 5 + ("conv3x3",), ()])
def test_to_string_errors(ops):
    with pytest.raises(GraphError, match="6 edge ops"):
        nb201.to_string(ops)


def test_all_architectures_count_order_and_distinct():
    archs = nb201.all_architectures()
    assert len(archs) == nb201.NUM_ARCHS == 15625
    assert len(set(archs)) == 15625
    assert archs[0] == FIRST and archs[1] == SECOND and archs[-1] == LAST
    assert archs[5] == "|none~0|+|none~0|none~1|+|none~0|skip_connect~1|none~2|"
    assert archs == nb201.all_architectures()
    assert BEST in archs
    for a in archs:
        assert nb201.to_string(nb201.parse(a)) == a


@pytest.mark.slow
def test_all_architectures_round_trip_through_network_graphs():
    # Every string through the real graph builder (full 3 x 5-cell networks, validated) and back.
    t0 = time.perf_counter()
    archs = nb201.all_architectures()
    for a in archs:
        assert nb201.arch_string(nb201.network(a)) == a
    assert time.perf_counter() - t0 < 60


def test_best_arch_network():
    g = nb201.network(BEST)
    assert g.validate() is g
    assert g.meta == {"arch": BEST, "channels": 16, "cells_per_stage": 5}
    assert nb201.cell_ops(g) == nb201.parse(BEST)
    assert nb201.network(nb201.parse(BEST)) == g            # ops tuple or string
    assert nb201.network(list(nb201.parse(BEST))) == g


def test_nb201_network_structure():
    g = nb201.network(BEST)
    assert g.space == "nb201"
    assert g.num_blocks == 19              # stem, 5 cells, reduction, 5, reduction, 5, classifier
    shapes = infer_shapes(g, (3, 32, 32))
    ranges = g.block_ranges()
    assert [n.op for n in g.nodes[slice(*ranges[0])]] == ["input", "stem_conv"]
    assert shapes[1].channels == 16
    reduction_blocks = (6, 12)
    for b in range(1, 18):
        start, end = ranges[b]
        stage = b // 6                   # a reduction block outputs the next stage
        c, size = 16 << stage, 32 >> stage
        out = shapes[end - 1]
        assert (out.channels, out.height, out.width) == (c, size, size), b
        names = [n.name for n in g.nodes[start:end]]
        if b in reduction_blocks:
            assert names == ["reduce_a", "reduce_b", "shortcut", "reduce_out"]
            assert [n.op for n in g.nodes[start:end]] == ["conv3x3", "conv3x3", "pool_conv1x1", "sum"]
            assert [n.stride for n in g.nodes[start:end]] == [2, 1, 2, 1]
            preds = g.predecessors()
            assert preds[start] == preds[start + 2] == [ranges[b - 1][1] - 1]
        else:
            assert end - start == 9          # 6 edge ops + 3 sum nodes
            assert names == ["1<-0", "node1", "2<-0", "2<-1", "node2", "3<-0", "3<-1", "3<-2", "node3"]
            assert all(shapes[v].channels == c for v in range(start, end))
    assert g.nodes[-1].op == "classifier" and shapes[-1].channels == 10
    cells = [b for b in range(1, 18) if b not in reduction_blocks]
    assert len(cells) == 15


def test_nb201_cell_wiring():
    ops = ("nor_conv_1x1", "skip_connect", "none", "avg_pool_3x3", "nor_conv_3x3", "skip_connect")
    g = nb201.network(ops, cells_per_stage=1)
    start, end = g.block_ranges()[1]
    preds = g.predecessors()
    idx = {g.nodes[v].name: v for v in range(start, end)}
    entry = 1  # stem
    assert [g.nodes[idx[f"{d}<-{s}"]].op for d, s in nb201.EDGES] == \
        ["conv1x1", "identity", "zero", "avg_pool3x3", "conv3x3", "identity"]
    feature = {0: entry, 1: idx["node1"], 2: idx["node2"], 3: idx["node3"]}
    for d, s in nb201.EDGES:
        assert preds[idx[f"{d}<-{s}"]] == [feature[s]]
    assert preds[idx["node3"]] == [idx["3<-0"], idx["3<-1"], idx["3<-2"]]
    assert preds[idx["node2"]] == [idx["2<-0"], idx["2<-1"]]


def test_nb201_network_options():
    g = nb201.network(BEST, channels=8, cells_per_stage=2, num_classes=100)
    shapes = infer_shapes(g)
    assert g.num_blocks == 1 + 3 * 2 + 2 + 1
    assert shapes[-1].channels == 100
    assert shapes[-2].channels == 32 and shapes[-2].height == 8
    assert nb201.arch_string(g) == BEST


def test_cell_ops_errors():
    with pytest.raises(GraphError, match="not a NAS-Bench-201 graph"):
        nb201.cell_ops(cls_space.cifar_network(SMALL_CELL, num_blocks=1, channels=4))
    with pytest.raises(GraphError, match="lacks NAS-Bench-201 edge"):
        nb201.cell_ops(nb201.network(BEST, cells_per_stage=0))


def test_nb201_sample_architecture():
    rng = random.Random(0)
    archs = [nb201.sample_architecture(rng) for _ in range(30)]
    assert all(a.space == "nb201" and nb201.arch_string(a) == a.meta["arch"] for a in archs)
    assert len({a.meta["arch"] for a in archs}) > 25
    rng = random.Random(0)
    assert [nb201.sample_architecture(rng) for _ in range(30)] == archs   # deterministic by seed
