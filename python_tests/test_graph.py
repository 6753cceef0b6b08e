"""Tests of ghn_ext.core.graph: ArchGraph validation, ordering, levels, JSON, hashing, batching, rendering."""
from __future__ import annotations

import json
import os
import random
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
import torch

from ghn_ext.core.graph import FORMAT, ArchGraph, GraphBatch, GraphError, Node, as_graph_list
from ghn_ext.core.primitives import OP_INDEX
from ghn_ext.spaces import classification, nb201

REPO_ROOT = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------------- helpers
def tiny() -> ArchGraph:
    """input -> stem_conv(4) -> conv1x1(8) -> classifier(10); classifier in its own block."""
    return ArchGraph([Node("input", 0, 3), Node("stem_conv", 0, 4), Node("conv1x1", 0, 8),
                      Node("classifier", 1, 10)], [(0, 1), (1, 2), (2, 3)])


# stable_hash() of tiny(): computed once and hard-coded, so a change to the hashing (or a salted
# hash) is caught. Changing it invalidates every stored architecture id.
TINY_HASH = "274bc850e3225e18"


def two_blocks() -> ArchGraph:
    """6 nodes, 3 blocks, one diamond: 1 -> {2, 3} -> 4 with a cross-block edge from block 0."""
    nodes = [Node("input", 0, 3), Node("stem_conv", 0, 4), Node("conv3x3", 1, 4),
             Node("identity", 1), Node("sum", 1), Node("classifier", 2, 10)]
    edges = [(0, 1), (1, 2), (1, 3), (2, 4), (3, 4), (4, 5)]
    return ArchGraph(nodes, edges)


def one_block() -> ArchGraph:
    return ArchGraph([Node("input", 0, 3), Node("stem_conv", 0, 4), Node("classifier", 0, 10)],
                     [(0, 1), (1, 2)])


def chain_with_skip() -> ArchGraph:
    """Longest path differs from shortest: 1 -> 4 directly and 1 -> 2 -> 3 -> 4."""
    nodes = [Node("input", 0, 3), Node("stem_conv", 0, 4), Node("conv1x1", 0, 4),
             Node("conv3x3", 0, 4), Node("sum", 0), Node("classifier", 0, 10)]
    edges = [(0, 1), (1, 2), (2, 3), (1, 4), (3, 4), (4, 5)]
    return ArchGraph(nodes, edges)


def sample_graphs():
    rng = random.Random(7)
    gs = [nb201.sample_architecture(rng) for _ in range(3)]
    gs += [classification.sample_architecture(rng, num_nodes=5, num_blocks=4, channels=8) for _ in range(3)]
    return gs


# --------------------------------------------------------------------------------- structure
def test_basic_structure_accessors():
    g = two_blocks().validate()
    assert len(g) == 6
    assert g.num_blocks == 3
    assert g.block_ranges() == [(0, 2), (2, 5), (5, 6)]
    assert g.predecessors() == [[], [0], [1], [1], [2, 3], [4]]
    assert g.successors() == [[1], [2, 3], [4], [4], [5], []]
    assert g.op_indices() == [OP_INDEX[n.op] for n in g.nodes]
    assert ArchGraph([], []).num_blocks == 0
    assert ArchGraph([], []).block_ranges() == []


def test_edges_are_normalised_to_int_tuples():
    g = ArchGraph([Node("input"), Node("classifier", 0, 10)], [[0, 1]])
    assert g.edges == ((0, 1),)
    assert isinstance(g.nodes, tuple)


def test_valid_graphs_validate_and_return_self():
    for g in [tiny(), two_blocks(), one_block(), chain_with_skip(), *sample_graphs()]:
        assert g.validate() is g


# --------------------------------------------------------------------------------- validation
def _err(nodes, edges, match):
    with pytest.raises(GraphError, match=match):
        ArchGraph(nodes, edges).validate()


def test_cycle_is_rejected():
    nodes = [Node("input", 0, 3), Node("stem_conv", 0, 4), Node("conv1x1", 0, 4),
             Node("conv3x3", 0, 4), Node("classifier", 0, 10)]
    _err(nodes, [(0, 1), (1, 2), (2, 3), (3, 2), (3, 4)], r"cycle through nodes \[2, 3, 4\]")


def test_self_loop_is_a_cycle():
    nodes = [Node("input", 0, 3), Node("stem_conv", 0, 4), Node("classifier", 0, 10)]
    _err(nodes, [(0, 1), (1, 1), (1, 2)], "cycle")


def test_unknown_op_is_rejected():
    nodes = list(tiny().nodes)
    nodes[2] = Node("warp_drive", 0, 8)
    _err(nodes, tiny().edges, r"node 2: unknown op 'warp_drive'; known ops: input, ")


def test_node_without_input_is_rejected():
    nodes = [Node("input", 0, 3), Node("stem_conv", 0, 4), Node("conv1x1", 0, 4), Node("sum", 0),
             Node("classifier", 0, 10)]
    _err(nodes, [(0, 1), (1, 3), (2, 3), (3, 4)], r"node 2 \(conv1x1\) has no input")


def test_source_with_input_is_rejected():
    nodes = [Node("input", 0, 3), Node("stem_conv", 0, 4), Node("input", 0, 3), Node("sum", 0),
             Node("classifier", 0, 10)]
    _err(nodes, [(0, 1), (1, 2), (2, 3), (3, 4)], r"node 2 \(input\) is a network input but has incoming")


def test_dead_end_is_rejected():
    nodes = [Node("input", 0, 3), Node("stem_conv", 0, 4), Node("conv1x1", 0, 4), Node("classifier", 0, 10)]
    _err(nodes, [(0, 1), (1, 2), (1, 3)], r"node 2 \(conv1x1\) reaches no output")


def test_graph_without_classifier_is_rejected():
    nodes = [Node("input", 0, 3), Node("stem_conv", 0, 4), Node("conv1x1", 0, 4)]
    _err(nodes, [(0, 1), (1, 2)], r"no output \(classifier\) node: the output is unreachable")
    _err([Node("input", 0, 3)], [], "no output")


def test_empty_graph_is_rejected():
    _err([], [], "no nodes")


@pytest.mark.parametrize("edge", [(2, 9), (9, 2), (4, 3), (-1, 2), (1, -1)])
def test_edge_index_out_of_range_is_rejected(edge):
    edges = list(tiny().edges) + [edge]
    _err(tiny().nodes, edges, r"edge 3 .* node index out of range \[0, 4\)")


def test_edge_from_later_block_is_rejected():
    g = two_blocks()
    # node 3 (block 1) -> node 1 (block 0)
    _err(g.nodes, list(g.edges) + [(3, 1)], r"edge 6 \(3 -> 1\) goes from block 1 back to block 0")


def test_nodes_out_of_block_order_are_rejected():
    nodes = [Node("input", 0, 3), Node("stem_conv", 1, 4), Node("conv1x1", 0, 4), Node("classifier", 2, 10)]
    _err(nodes, [(0, 1), (1, 2), (2, 3)], r"node 2: block 0 after block 1; nodes must be stored in block order")


@pytest.mark.parametrize("idx,node", [
    (2, Node("conv1x1", 0, 8, stride=0)),
    (2, Node("conv1x1", 0, 8, stride=-2)),
    (2, Node("identity", 0, 0, stride=2)),   # identity cannot stride
    (3, Node("classifier", 1, 10, stride=2)),
    (0, Node("input", 0, 3, stride=2)),
])
def test_invalid_stride_is_rejected(idx, node):
    nodes = list(tiny().nodes)
    nodes[idx] = node
    _err(nodes, tiny().edges, rf"node {idx} \({node.op}\): invalid stride {node.stride}")


def test_graph_error_is_a_value_error():
    assert issubclass(GraphError, ValueError)


# --------------------------------------------------------------------------------- order and levels
def _assert_topological(g: ArchGraph, order):
    assert sorted(order) == list(range(len(g)))
    pos = {v: i for i, v in enumerate(order)}
    assert all(pos[u] < pos[v] for u, v in g.edges)


def test_topological_order_is_valid_for_sampled_graphs():
    for g in sample_graphs():
        _assert_topological(g, g.topological_order())


def test_topological_order_smallest_ready_first():
    # node 2 is fed by node 3, so index order is not topological
    nodes = [Node("input", 0, 3), Node("stem_conv", 0, 4), Node("conv1x1", 0, 4), Node("conv3x3", 0, 4),
             Node("classifier", 0, 10)]
    g = ArchGraph(nodes, [(0, 1), (3, 2), (1, 3), (2, 4)]).validate()
    assert g.topological_order() == [0, 1, 3, 2, 4]
    assert two_blocks().topological_order() == [0, 1, 2, 3, 4, 5]


def test_topological_order_is_deterministic_under_edge_permutation():
    for g in sample_graphs():
        edges = list(g.edges)
        random.Random(0).shuffle(edges)
        shuffled = ArchGraph(g.nodes, edges, g.space)
        assert shuffled.topological_order() == g.topological_order() == g.topological_order()


def test_levels_are_longest_path_depths():
    assert chain_with_skip().levels() == [0, 1, 2, 3, 4, 5]   # node 4: max(1, 3) + 1
    assert two_blocks().levels() == [0, 1, 2, 2, 3, 4]
    assert tiny().levels() == [0, 1, 2, 3]


def test_levels_match_brute_force_longest_path():
    for g in sample_graphs():
        preds = g.predecessors()
        memo = {}

        def depth(v):
            if v not in memo:
                memo[v] = max((depth(u) + 1 for u in preds[v]), default=0)
            return memo[v]

        sys.setrecursionlimit(max(sys.getrecursionlimit(), 10000))
        assert g.levels() == [depth(v) for v in range(len(g))]


# --------------------------------------------------------------------------------- Node
def test_node_dict_omits_defaults_and_round_trips():
    assert Node("conv1x1").to_dict() == {"op": "conv1x1"}
    n = Node("conv3x3", block=2, channels=16, stride=2, scale=8, exit=True, name="x")
    assert n.to_dict() == {"op": "conv3x3", "block": 2, "channels": 16, "stride": 2, "scale": 8,
                           "exit": True, "name": "x"}
    assert Node.from_dict(n.to_dict()) == n


def test_node_from_dict_errors():
    with pytest.raises(GraphError, match=r"unknown attributes \['colour'\]"):
        Node.from_dict({"op": "conv1x1", "colour": "red"})
    with pytest.raises(GraphError, match="has no 'op'"):
        Node.from_dict({"block": 1})


# --------------------------------------------------------------------------------- JSON
def test_json_round_trip():
    for g in [tiny().with_meta(note="hi", n=3), two_blocks(), *sample_graphs()]:
        text = g.to_json()
        back = ArchGraph.from_json(text)
        assert back == g
        assert back.meta == g.meta
        assert back.space == g.space
        assert back.to_json() == text
        assert ArchGraph.from_json(g.to_json(indent=2)) == g


def test_json_document_layout():
    d = json.loads(tiny().to_json())
    assert d["format"] == FORMAT
    assert d["edges"] == [[0, 1], [1, 2], [2, 3]]
    assert d["nodes"][0] == {"op": "input", "channels": 3}
    assert d["space"] == "custom" and d["meta"] == {}


def _doc(**changes):
    d = json.loads(tiny().to_json())
    d.update(changes)
    return d


@pytest.mark.parametrize("text,match", [
    ("{not json", "not valid JSON"),
    ("", "not valid JSON"),
    ("[1, 2]", "not an architecture graph"),
    ("42", "not an architecture graph"),
    (json.dumps(_doc(format="other/1")), "not an architecture graph"),
    (json.dumps({k: v for k, v in _doc().items() if k != "format"}), "not an architecture graph"),
    (json.dumps({k: v for k, v in _doc().items() if k != "nodes"}), "malformed architecture graph"),
    (json.dumps({k: v for k, v in _doc().items() if k != "edges"}), "malformed architecture graph"),
    (json.dumps(_doc(nodes=[{"block": 0}])), "has no 'op'"),
    (json.dumps(_doc(nodes=[{"op": "input", "size": 3}])), "unknown attributes"),
    (json.dumps(_doc(nodes=5)), "malformed"),
    (json.dumps(_doc(nodes=[5])), "malformed"),
    (json.dumps(_doc(edges=[[0, 1, 2], [1, 2], [2, 3]])), "pair"),
    (json.dumps(_doc(edges=[[0], [1, 2], [2, 3]])), "pair"),
    (json.dumps(_doc(edges=[0, 1, 2])), "malformed"),
    (json.dumps(_doc(edges=["ab", [1, 2], [2, 3]])), "pair"),
    (json.dumps(_doc(edges=[["0", "1"], [1, 2], [2, 3]])), "pair"),
    (json.dumps(_doc(edges=[[0.5, 1], [1, 2], [2, 3]])), "pair"),
    (json.dumps(_doc(edges=[[True, 1], [1, 2], [2, 3]])), "pair"),
    (json.dumps(_doc(nodes=[{"op": "input", "block": "a"}, {"op": "stem_conv", "channels": 4},
                            {"op": "conv1x1", "channels": 8}, {"op": "classifier", "block": 1, "channels": 10}])),
     "'block' must be int"),
    (json.dumps(_doc(nodes=[{"op": ["input"]}, {"op": "stem_conv", "channels": 4},
                            {"op": "conv1x1", "channels": 8}, {"op": "classifier", "block": 1, "channels": 10}])),
     "'op' must be str"),
    (json.dumps(_doc(nodes=[{"op": "input", "exit": 1}, {"op": "stem_conv", "channels": 4},
                            {"op": "conv1x1", "channels": 8}, {"op": "classifier", "block": 1, "channels": 10}])),
     "'exit' must be bool"),
    # well-formed JSON of an invalid graph is validated on load
    (json.dumps(_doc(edges=[[0, 1], [1, 2]])), "reaches no output"),
    (json.dumps(_doc(edges=[[0, 1], [1, 2], [2, 3], [3, 7]])), "out of range"),
])
def test_from_json_errors_are_graph_errors(text, match):
    with pytest.raises(GraphError, match=match):
        ArchGraph.from_json(text)


def test_from_dict_rejects_non_dict():
    with pytest.raises(GraphError):
        ArchGraph.from_dict(["format"])  # type: ignore[arg-type]


# --------------------------------------------------------------------------------- stable hash
def test_stable_hash_known_value():
    assert tiny().stable_hash() == TINY_HASH
    assert len(TINY_HASH) == 16 and int(TINY_HASH, 16) >= 0


def test_stable_hash_is_not_salted_across_processes():
    code = ("from ghn_ext.core.graph import ArchGraph, Node\n"
            "g = ArchGraph([Node('input', 0, 3), Node('stem_conv', 0, 4), Node('conv1x1', 0, 8),"
            " Node('classifier', 1, 10)], [(0, 1), (1, 2), (2, 3)])\n"
            "print(g.stable_hash(), hash('salt-check'))\n")
    # one fresh interpreter with a hash seed different from this one (a second import of torch
    # would double the cost): the str hash differs between the processes, the stable hash does not
    seed = "1" if os.environ.get("PYTHONHASHSEED") != "1" else "2"
    env = {**os.environ, "PYTHONHASHSEED": seed,
           "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])}
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True, cwd=str(REPO_ROOT))
    child_hash, child_str_hash = res.stdout.split()
    assert int(child_str_hash) != hash("salt-check")   # the processes really are salted differently
    assert child_hash == tiny().stable_hash() == TINY_HASH


def test_stable_hash_round_trip_and_sensitivity():
    g = tiny()
    assert ArchGraph.from_json(g.to_json()).stable_hash() == g.stable_hash()
    assert g.with_meta(anything=[1, 2, 3]).stable_hash() == g.stable_hash()       # meta ignored
    assert ArchGraph(g.nodes, list(reversed(g.edges))).stable_hash() == g.stable_hash()  # edge order ignored
    nodes = list(g.nodes)
    nodes[2] = Node("conv3x3", 0, 8)
    assert ArchGraph(nodes, g.edges).stable_hash() != g.stable_hash()               # op changes
    nodes = list(g.nodes)
    nodes[2] = Node("conv1x1", 0, 16)
    assert ArchGraph(nodes, g.edges).stable_hash() != g.stable_hash()               # attribute changes
    assert ArchGraph(g.nodes, g.edges, space="other").stable_hash() != g.stable_hash()
    for s in sample_graphs():
        assert ArchGraph.from_json(s.to_json()).stable_hash() == s.stable_hash()


def test_stable_hash_distinguishes_nb201_cells():
    archs = nb201.all_architectures()[:50]
    hashes = {nb201.network(a, cells_per_stage=1).stable_hash() for a in archs}
    assert len(hashes) == 50


def test_with_meta_merges_and_keeps_equality():
    g = tiny().with_meta(a=1)
    h = g.with_meta(b=2)
    assert h.meta == {"a": 1, "b": 2}
    assert g.meta == {"a": 1}
    assert h == tiny()  # meta does not take part in equality


# --------------------------------------------------------------------------------- GraphBatch
def test_graph_batch_offsets_by_hand():
    g1, g2, g3 = tiny(), two_blocks(), one_block()   # 4, 6, 3 nodes; 2, 3, 1 blocks
    b = GraphBatch.from_graphs([g1, g2, g3])
    assert b.num_graphs == 3
    assert b.num_nodes == 13
    assert b.graphs == (g1, g2, g3)
    assert b.node_ptr.tolist() == [0, 4, 10, 13]
    # g1 blocks [0,3) [3,4); g2 (offset 4) [4,6) [6,9) [9,10); g3 (offset 10) [10,13)
    assert b.block_ptr.tolist() == [0, 3, 4, 6, 9, 10, 13]
    assert b.graph_block_ptr.tolist() == [0, 2, 5, 6]
    assert b.edge_index.tolist() == [
        [0, 1, 2, 4, 5, 5, 6, 7, 8, 10, 11],
        [1, 2, 3, 5, 6, 7, 8, 8, 9, 11, 12],
    ]
    assert b.block_edge_mask.tolist() == [True, True, False,
                                          True, False, False, True, True, False,
                                          True, True]
    ops = [OP_INDEX[o] for o in ["input", "stem_conv", "conv1x1", "classifier",
                                 "input", "stem_conv", "conv3x3", "identity", "sum", "classifier",
                                 "input", "stem_conv", "classifier"]]
    assert b.op_index.tolist() == ops
    for t in (b.op_index, b.edge_index, b.node_ptr, b.block_ptr, b.graph_block_ptr):
        assert t.dtype == torch.int64
    assert b.block_edge_mask.dtype == torch.bool
    assert b.edge_index.shape == (2, 11)


def test_graph_batch_consistent_with_graphs():
    gs = sample_graphs()
    b = GraphBatch.from_graphs(iter(gs))   # any iterable
    gb = b.graph_block_ptr.tolist()
    for g_i, g in enumerate(gs):
        off = b.node_ptr[g_i].item()
        assert b.node_ptr[g_i + 1].item() - off == len(g)
        ranges = [(b.block_ptr[k].item() - off, b.block_ptr[k + 1].item() - off)
                  for k in range(gb[g_i], gb[g_i + 1])]
        assert ranges == g.block_ranges()
    assert b.edge_index.shape[1] == sum(len(g.edges) for g in gs)
    assert b.block_edge_mask.shape == (b.edge_index.shape[1],)


def test_graph_batch_single_graph_and_edgeless_graph():
    b = GraphBatch.from_graphs([tiny()])
    assert b.node_ptr.tolist() == [0, 4]
    assert b.edge_index.tolist() == [[0, 1, 2], [1, 2, 3]]
    e = GraphBatch.from_graphs([ArchGraph([Node("classifier", 0, 10)], [])])
    assert e.edge_index.shape == (2, 0) and e.edge_index.dtype == torch.int64
    assert e.block_edge_mask.shape == (0,)


def test_empty_batch_is_an_error():
    with pytest.raises(GraphError, match="empty list of graphs"):
        GraphBatch.from_graphs([])
    with pytest.raises(GraphError):
        GraphBatch.from_graphs(iter(()))


def test_as_graph_list():
    g, h = tiny(), two_blocks()
    assert as_graph_list(g) == (g,)
    assert as_graph_list([g, h]) == (g, h)
    assert as_graph_list(GraphBatch.from_graphs([h, g])) == (h, g)


# --------------------------------------------------------------------------------- DOT / PNG
def test_to_dot_has_one_box_per_node_labelled_with_op():
    g = two_blocks().with_meta()
    nodes = list(g.nodes)
    nodes[2] = Node("conv3x3", 1, 4, stride=2, exit=True)
    g = ArchGraph(nodes, g.edges)
    dot = g.to_dot(title="my arch")
    assert dot.startswith("digraph arch {") and dot.rstrip().endswith("}")
    assert "shape=box" in dot
    node_lines = [ln.strip() for ln in dot.splitlines() if ln.strip().startswith("n") and "[label=" in ln]
    assert len(node_lines) == len(g)
    for i, nd in enumerate(g.nodes):
        line = next(ln for ln in node_lines if ln.startswith(f"n{i} "))
        assert line.startswith(f'n{i} [label="{nd.op}')
    assert 'n2 [label="conv3x3\\n4ch /2", fillcolor="#f4b6b6"];' in node_lines
    assert 'n3 [label="identity"];' in node_lines
    for u, v in g.edges:
        assert f"n{u} -> n{v};" in dot
    assert dot.count(" -> ") == len(g.edges)
    assert dot.count("subgraph cluster_") == g.num_blocks
    assert 'label="my arch"' in dot
    assert 'label="my arch"' not in g.to_dot()


def test_subgraph_of_block():
    g = two_blocks()
    s = g.subgraph_of_block(1)
    assert [n.op for n in s.nodes] == ["conv3x3", "identity", "sum"]
    assert all(n.block == 0 for n in s.nodes)
    assert s.edges == ((0, 2), (1, 2))
    assert s.meta == {"block": 1}


def _png_dims(data: bytes):
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    length, kind = struct.unpack(">I4s", data[8:16])
    assert kind == b"IHDR" and length == 13
    w, h = struct.unpack(">II", data[16:24])
    crc = struct.unpack(">I", data[29:33])[0]
    assert crc == zlib.crc32(data[12:29]) & 0xFFFFFFFF
    assert data[-12:] == b"\x00\x00\x00\x00IEND\xaeB`\x82"
    return w, h


@pytest.mark.skipif(shutil.which("dot") is None, reason="graphviz `dot` binary not installed")
def test_render_png_produces_valid_png(tmp_path):
    out = tiny().render_png(tmp_path / "sub" / "arch.png", title="tiny")
    assert out == tmp_path / "sub" / "arch.png"
    w, h = _png_dims(out.read_bytes())
    assert w > 0 and h > 0
    big = nb201.network(nb201.all_architectures()[100], cells_per_stage=1).render_png(str(tmp_path / "b.png"))
    bw, bh = _png_dims(big.read_bytes())
    assert bh > h   # a taller graph gives a taller picture


def test_render_png_without_dot_draws_with_matplotlib(monkeypatch, tmp_path):
    """Issue 31: without graphviz the demo wrote best_cell.dot instead of the promised picture."""
    import ghn_ext.core.graph as graph_mod
    monkeypatch.setattr(graph_mod.shutil, "which", lambda name: None)
    out = tiny().render_png(tmp_path / "x.png", title="tiny")
    w, h = _png_dims(out.read_bytes())
    big = nb201.network(nb201.all_architectures()[100], cells_per_stage=1).render_png(tmp_path / "b.png")
    assert w > 0 and _png_dims(big.read_bytes())[1] > h  # a deeper graph gives a taller picture
    with pytest.raises(GraphError, match="graphviz needs its `dot` binary"):
        tiny().render_png(tmp_path / "y.png", engine="graphviz")
    assert not (tmp_path / "y.png").exists()
    with pytest.raises(GraphError, match="unknown rendering engine"):
        tiny().render_png(tmp_path / "z.png", engine="svg")
