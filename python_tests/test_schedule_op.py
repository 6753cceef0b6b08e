"""Tests of ghn_ext::dag_schedule: compiled kernels (CPU, CUDA) against the pure-PyTorch reference.

Every sample in `sample_inputs()` is run through the reference and the compiled op; the outputs
must be identical, satisfy the schedule's defining properties, and pass torch.library.opcheck.
Bad inputs must raise the same exception type with the same message from every implementation.
Tests that need the compiled library skip when it is not built (CI always builds it and sets
GHN_EXT_REQUIRE_EXTENSION=1, which turns a missing library into a failure).
"""
from __future__ import annotations

import os
import random
import subprocess
import sys
import textwrap
import warnings

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ghn_ext.ops._extension as ext
from ghn_ext.ops import HAS_EXTENSION, Schedule, dag_schedule, dag_schedule_reference

requires_ext = pytest.mark.skipif(
    not HAS_EXTENSION, reason=f"compiled extension ghn_ext._C not built ({ext.IMPORT_ERROR})"
)
requires_cuda = pytest.mark.skipif(
    not (HAS_EXTENSION and torch.cuda.is_available()),
    reason="needs a CUDA device and the compiled extension with CUDA kernels",
)


# --------------------------------------------------------------------------------------------
# building inputs


def batch(graphs):
    """graphs: list of (num_nodes, [(u, v), ...]) with LOCAL node ids -> (edge_index, node_ptr, N)."""
    ptr = [0]
    edges = []
    for n, local_edges in graphs:
        edges += [(ptr[-1] + u, ptr[-1] + v) for u, v in local_edges]
        ptr.append(ptr[-1] + n)
    edge_index = torch.tensor(edges, dtype=torch.long).reshape(-1, 2).t().contiguous()
    return edge_index, torch.tensor(ptr, dtype=torch.long), ptr[-1]


def random_dag(rng: random.Random, n: int, p: float):
    """A random DAG on n nodes whose topological order is a random permutation of the ids, so the
    schedule's order is not trivially the identity; edges in random order, some duplicated."""
    perm = list(range(n))
    rng.shuffle(perm)
    edges = [(perm[i], perm[j]) for i in range(n) for j in range(i + 1, n) if rng.random() < p]
    edges += [rng.choice(edges) for _ in range(len(edges) // 10)] if edges else []
    rng.shuffle(edges)
    return n, edges


def sample_inputs():
    """(id, edge_index, node_ptr, num_nodes) covering the shapes the GHN meets."""
    rng = random.Random(0)
    samples = []

    def add(name, graphs):
        samples.append((name, *batch(graphs)))

    add("single_node", [(1, [])])
    add("chain", [(20, [(i, i + 1) for i in range(19)])])
    add("reversed_chain", [(20, [(i + 1, i) for i in range(19)])])
    add("wide_fan_in", [(65, [(i, 64) for i in range(64)])])
    add("wide_fan_out", [(65, [(0, i) for i in range(1, 65)])])
    add("diamond", [(4, [(0, 1), (0, 2), (1, 3), (2, 3)])])
    add("duplicate_edges", [(3, [(0, 1), (0, 1), (1, 2), (0, 2), (0, 1)])])
    add("no_edges", [(3, []), (2, [])])
    add("skip_connections", [(6, [(0, 1), (1, 2), (2, 3), (3, 4), (4, 5), (0, 3), (1, 5), (0, 5)])])
    add("unequal_batch", [random_dag(rng, n, 0.3) for n in (7, 1, 13, 2, 30, 5)])
    add("batch_with_empty_graph", [(3, [(0, 1), (1, 2)]), (0, []), (4, [(3, 0), (2, 0)])])
    add("random_large", [random_dag(rng, rng.randint(1, 60), 0.1) for _ in range(12)])
    samples.append(("empty_batch", torch.zeros(2, 0, dtype=torch.long), torch.zeros(1, dtype=torch.long), 0))
    return samples


SAMPLES = sample_inputs()
SAMPLE_IDS = [s[0] for s in SAMPLES]


def compiled(edge_index, node_ptr, num_nodes) -> Schedule:
    return Schedule(*torch.ops.ghn_ext.dag_schedule.default(edge_index, node_ptr, num_nodes))


def reference(edge_index, node_ptr, num_nodes) -> Schedule:
    return dag_schedule_reference(edge_index, node_ptr, num_nodes)


IMPLS = {
    "reference": reference,
    "compiled": pytest.param(compiled, marks=requires_ext),
}


def assert_same(a: Schedule, b: Schedule):
    for name, x, y in zip(Schedule._fields, a, b):
        assert x.dtype == y.dtype == torch.long, name
        assert x.device == y.device, name
        assert x.shape == y.shape, (name, x.shape, y.shape)
        assert torch.equal(x.cpu(), y.cpu()), f"{name}: {x.tolist()} != {y.tolist()}"


def check_properties(s: Schedule, edge_index, node_ptr, n):
    """The definition of the schedule, checked independently of any implementation."""
    src, dst = edge_index.tolist()
    ptr = node_ptr.tolist()
    order, level, rev = s.order.tolist(), s.level.tolist(), s.reverse_order.tolist()
    e = len(src)
    assert [len(t) for t in s] == [n, n, n, n + 1, e, n + 1, e]
    preds = [[] for _ in range(n)]
    succs = [[] for _ in range(n)]
    for u, v in zip(src, dst):
        preds[v].append(u)
        succs[u].append(v)
    # levels are longest-path depths
    for v in range(n):
        assert level[v] == max((level[u] + 1 for u in preds[v]), default=0)
    pos = {}
    for g in range(len(ptr) - 1):
        a, b = ptr[g], ptr[g + 1]
        seg = order[a:b]
        assert sorted(seg) == list(range(a, b)), "each segment is a permutation of its graph's nodes"
        assert seg == sorted(seg, key=lambda v: (level[v], v)), "sorted by (level, id)"
        assert rev[a:b] == seg[::-1]
        pos.update({v: i for i, v in enumerate(seg)})
    for u, v in zip(src, dst):
        assert pos[u] < pos[v], f"edge {u}->{v} violates the topological order"
    # CSRs: neighbours ascending, duplicates kept
    in_ptr, in_src = s.in_ptr.tolist(), s.in_src.tolist()
    out_ptr, out_dst = s.out_ptr.tolist(), s.out_dst.tolist()
    for v in range(n):
        assert in_src[in_ptr[v]:in_ptr[v + 1]] == sorted(preds[v])
        assert out_dst[out_ptr[v]:out_ptr[v + 1]] == sorted(succs[v])


# --------------------------------------------------------------------------------------------
# correctness


def test_reference_hand_checked_diamond_with_permuted_ids():
    # 3 -> {0, 2} -> 1, plus a separate single-node graph (node 4)
    ei, ptr, n = batch([(4, [(3, 0), (3, 2), (0, 1), (2, 1)]), (1, [])])
    s = dag_schedule_reference(ei, ptr, n)
    assert s.level.tolist() == [1, 2, 1, 0, 0]
    assert s.order.tolist() == [3, 0, 2, 1, 4]
    assert s.reverse_order.tolist() == [1, 2, 0, 3, 4]
    assert s.in_ptr.tolist() == [0, 1, 3, 4, 4, 4]
    assert s.in_src.tolist() == [3, 0, 2, 3]
    assert s.out_ptr.tolist() == [0, 1, 1, 2, 4, 4]
    assert s.out_dst.tolist() == [1, 1, 0, 2]


@pytest.mark.parametrize("impl", IMPLS.values(), ids=IMPLS.keys())
@pytest.mark.parametrize("sample", SAMPLES, ids=SAMPLE_IDS)
def test_properties(impl, sample):
    _, ei, ptr, n = sample
    check_properties(impl(ei, ptr, n), ei, ptr, n)


@requires_ext
@pytest.mark.parametrize("sample", SAMPLES, ids=SAMPLE_IDS)
def test_compiled_matches_reference(sample):
    _, ei, ptr, n = sample
    assert_same(compiled(ei, ptr, n), reference(ei, ptr, n))


@requires_ext
def test_compiled_large_batch_parallel_path():
    # enough work (N + E > 2^15) for the CPU kernel to split the graphs across threads
    rng = random.Random(1)
    ei, ptr, n = batch([random_dag(rng, rng.randint(1, 120), 0.05) for _ in range(300)])
    assert n + ei.shape[1] > 1 << 15
    assert_same(compiled(ei, ptr, n), reference(ei, ptr, n))


@pytest.mark.parametrize("impl", IMPLS.values(), ids=IMPLS.keys())
def test_non_contiguous_inputs(impl):
    ei, ptr, n = batch([(5, [(4, 3), (3, 2), (4, 0), (1, 2)]), (3, [(2, 1)])])
    ei_nc = ei.t().contiguous().t()  # (2, E) view of an (E, 2) tensor
    assert not ei_nc.is_contiguous()
    ptr_nc = torch.stack([ptr, ptr], dim=1)[:, 0]  # stride 2
    assert not ptr_nc.is_contiguous()
    assert_same(impl(ei_nc, ptr_nc, n), reference(ei, ptr, n))


def test_public_wrapper_defaults_num_nodes():
    ei, ptr, n = batch([(3, [(0, 2), (2, 1)]), (2, [(1, 0)])])
    s = dag_schedule(ei, ptr)
    assert isinstance(s, Schedule)
    assert_same(s, reference(ei, ptr, n))


def test_reference_forced_by_env(monkeypatch):
    monkeypatch.setenv("GHN_EXT_REFERENCE", "1")
    assert not ext.use_extension()
    ei, ptr, n = batch([(3, [(0, 2), (2, 1)])])
    calls = []
    monkeypatch.setattr(
        "ghn_ext.ops.schedule.dag_schedule_reference",
        lambda *a: calls.append(a) or reference(*a),
    )
    dag_schedule(ei, ptr, n)
    assert len(calls) == 1
    monkeypatch.setenv("GHN_EXT_REFERENCE", "0")
    assert ext.use_extension() == HAS_EXTENSION


def test_missing_extension_warns_once(monkeypatch):
    monkeypatch.delenv("GHN_EXT_REFERENCE", raising=False)
    monkeypatch.setattr(ext, "HAS_EXTENSION", False)
    monkeypatch.setattr(ext, "_warned", False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert not ext.use_extension()
        assert not ext.use_extension()
    msgs = [str(w.message) for w in caught]
    assert len(msgs) == 1, msgs
    assert "not built" in msgs[0] and "reference" in msgs[0]


def test_package_imports_and_works_without_compiled_library():
    # A fresh interpreter in which `import ghn_ext._C` fails, as in a source checkout never built.
    code = textwrap.dedent(
        """
        import sys, warnings
        sys.modules["ghn_ext._C"] = None  # makes the import raise ImportError
        import torch
        import ghn_ext.ops as ops
        assert not ops.HAS_EXTENSION
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            s = ops.dag_schedule(torch.tensor([[1], [0]]), torch.tensor([0, 2]))
            ops.dag_schedule(torch.tensor([[1], [0]]), torch.tensor([0, 2]))
        assert s.order.tolist() == [1, 0], s
        assert len([w for w in caught if "not built" in str(w.message)]) == 1
        print("ok")
        """
    )
    # the directory holding the ghn_ext package under test (source tree or site-packages)
    package_parent = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(ext.__file__))))
    env = dict(os.environ, PYTHONPATH=package_parent + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("GHN_EXT_REFERENCE", None)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr


def test_cmake_library_matches_reference():
    """The CMake build (libghn_ext.so, loaded with torch.ops.load_library) gives the same results.

    Runs in a fresh interpreter: the op namespace can be registered only once per process, so the
    library cannot be loaded next to ghn_ext._C.
    """
    lib = os.environ.get("GHN_EXT_CMAKE_LIBRARY")
    if not lib:
        pytest.skip("GHN_EXT_CMAKE_LIBRARY (path of the CMake-built libghn_ext.so) is not set; .ci/run sets it")
    code = textwrap.dedent(
        """
        import random, sys
        sys.modules["ghn_ext._C"] = None  # keep the setup.py build out of this process
        import torch
        torch.ops.load_library(sys.argv[1])
        from ghn_ext.ops.schedule import dag_schedule_reference
        sys.path.insert(0, sys.argv[2])
        from test_schedule_op import SAMPLES
        for name, ei, ptr, n in SAMPLES:
            got = torch.ops.ghn_ext.dag_schedule(ei, ptr, n)
            want = dag_schedule_reference(ei, ptr, n)
            assert all(torch.equal(a, b) for a, b in zip(got, want)), name
        try:
            torch.ops.ghn_ext.dag_schedule(torch.tensor([[0, 1], [1, 0]]), torch.tensor([0, 2]), 2)
            raise AssertionError("no error for a cycle")
        except ValueError as exc:
            assert "graph 0 contains a cycle" in str(exc), exc
        print("ok", len(SAMPLES))
        """
    )
    package_parent = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(ext.__file__))))
    env = dict(os.environ, PYTHONPATH=package_parent + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = subprocess.run([sys.executable, "-c", code, lib, os.path.dirname(os.path.abspath(__file__))],
                         capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0 and "ok" in out.stdout, out.stdout + out.stderr


def test_extension_built_when_required():
    if os.environ.get("GHN_EXT_REQUIRE_EXTENSION", "0") != "1":
        pytest.skip("GHN_EXT_REQUIRE_EXTENSION is not set (CI sets it)")
    assert HAS_EXTENSION, f"ghn_ext._C failed to import: {ext.IMPORT_ERROR}"


# --------------------------------------------------------------------------------------------
# errors: same type and message from every implementation


def _t(rows):
    return torch.tensor(rows, dtype=torch.long)


CYCLE = "contains a cycle"
BAD_INPUTS = [
    # id, edge_index, node_ptr, num_nodes, exception, message regex
    ("cycle", _t([[0, 1, 2], [1, 2, 0]]), _t([0, 3]), 3, ValueError, f"graph 0 {CYCLE}"),
    ("cycle_in_third_graph", _t([[0, 2, 3, 6, 7], [1, 3, 4, 7, 6]]), _t([0, 2, 5, 8]), 8, ValueError,
     f"graph 2 {CYCLE}"),
    ("two_cycles_lowest_reported", _t([[3, 4, 0, 1], [4, 3, 1, 0]]), _t([0, 2, 5]), 5, ValueError,
     f"graph 0 {CYCLE}"),
    ("self_loop", _t([[0, 1], [1, 1]]), _t([0, 2]), 2, ValueError, f"graph 0 {CYCLE}"),
    ("out_of_range_dst", _t([[0, 0], [1, 7]]), _t([0, 3]), 3, ValueError,
     r"edge 1 has destination node index 7 out of range \[0, 3\)"),
    ("out_of_range_src", _t([[3], [0]]), _t([0, 3]), 3, ValueError,
     r"edge 0 has source node index 3 out of range \[0, 3\)"),
    ("negative_index", _t([[0, -1], [1, 2]]), _t([0, 3]), 3, ValueError,
     r"edge 1 has source node index -1 out of range"),
    ("edge_on_empty_batch", _t([[0], [0]]), _t([0]), 0, ValueError,
     r"edge 0 has source node index 0 out of range \[0, 0\)"),
    ("cross_graph", _t([[0, 1], [1, 2]]), _t([0, 2, 4]), 4, ValueError,
     r"edge 1 \(1 -> 2\) crosses graphs: source node 1 is in graph 0 but destination node 2 is in graph 1"),
    ("int32_edge_index", _t([[0], [1]]).int(), _t([0, 2]), 2, TypeError, "edge_index must be an int64"),
    ("float_edge_index", _t([[0], [1]]).float(), _t([0, 2]), 2, TypeError, "edge_index must be an int64"),
    ("int32_node_ptr", _t([[0], [1]]), _t([0, 2]).int(), 2, TypeError, "node_ptr must be an int64"),
    ("edge_index_three_rows", _t([[0], [1], [1]]), _t([0, 2]), 2, ValueError,
     r"edge_index must have shape \(2, E\), got shape \[3, 1\]"),
    ("edge_index_1d", _t([0, 1]), _t([0, 2]), 2, ValueError, r"edge_index must have shape \(2, E\)"),
    ("node_ptr_2d", _t([[0], [1]]), _t([[0, 2]]), 2, ValueError, "node_ptr must be a 1-D tensor"),
    ("node_ptr_empty", _t([[0], [1]]), torch.zeros(0, dtype=torch.long), 2, ValueError,
     "node_ptr must be a 1-D tensor"),
    ("node_ptr_not_starting_at_0", _t([[1], [2]]), _t([1, 3]), 3, ValueError, r"node_ptr\[0\] must be 0, got 1"),
    ("node_ptr_decreasing", _t([[0], [1]]), _t([0, 3, 2, 4]), 4, ValueError,
     r"node_ptr must be non-decreasing, but node_ptr\[1\] = 3 > node_ptr\[2\] = 2"),
    ("node_ptr_last_not_num_nodes", _t([[0], [1]]), _t([0, 2]), 3, ValueError,
     r"node_ptr\[1\] \(last entry\) must equal num_nodes = 3, got 2"),
    ("negative_num_nodes", torch.zeros(2, 0, dtype=torch.long), _t([0]), -1, ValueError,
     "num_nodes must be non-negative"),
]


@pytest.mark.parametrize("impl", IMPLS.values(), ids=IMPLS.keys())
@pytest.mark.parametrize("case", BAD_INPUTS, ids=[c[0] for c in BAD_INPUTS])
def test_bad_inputs_raise_clear_errors(impl, case):
    _, ei, ptr, n, exc, match = case
    with pytest.raises(exc, match="ghn_ext.dag_schedule: " + match):
        impl(ei, ptr, n)


@requires_ext
@pytest.mark.parametrize("case", BAD_INPUTS, ids=[c[0] for c in BAD_INPUTS])
def test_bad_inputs_same_message_compiled_and_reference(case):
    _, ei, ptr, n, exc, _ = case
    with pytest.raises(exc) as from_compiled:
        compiled(ei, ptr, n)
    with pytest.raises(exc) as from_reference:
        reference(ei, ptr, n)
    # dtype names print differently in C++ ("Int") and Python ("torch.int32"); the rest is identical
    if exc is not TypeError:
        assert str(from_compiled.value) == str(from_reference.value)


# --------------------------------------------------------------------------------------------
# torch.library.opcheck: schema, fake kernel, autograd registration, AOT dispatch


@requires_ext
@pytest.mark.parametrize(
    "sample", [s for s in SAMPLES if s[0] in ("single_node", "diamond", "duplicate_edges", "unequal_batch",
                                             "batch_with_empty_graph", "empty_batch")],
    ids=lambda s: s[0],
)
def test_opcheck(sample):
    _, ei, ptr, n = sample
    torch.library.opcheck(torch.ops.ghn_ext.dag_schedule.default, (ei, ptr, n))


@requires_ext
def test_fake_kernel_shapes():
    from torch._subclasses.fake_tensor import FakeTensorMode

    ei, ptr, n = batch([(5, [(0, 1), (1, 2), (3, 4)])])
    with FakeTensorMode() as mode:
        out = torch.ops.ghn_ext.dag_schedule.default(mode.from_tensor(ei), mode.from_tensor(ptr), n)
    assert [tuple(t.shape) for t in out] == [(5,), (5,), (5,), (6,), (3,), (6,), (3,)]
    assert all(t.dtype == torch.long for t in out)


# --------------------------------------------------------------------------------------------
# property-based fuzz against the reference


@st.composite
def dag_batches(draw, max_graphs=5, max_nodes=14):
    graphs = []
    for n in draw(st.lists(st.integers(0, max_nodes), min_size=1, max_size=max_graphs)):
        perm = draw(st.permutations(range(n)))  # topological rank -> node id
        pairs = draw(st.lists(st.tuples(st.integers(0, max(n - 1, 0)), st.integers(0, max(n - 1, 0))),
                              max_size=3 * n))
        edges = [(perm[min(i, j)], perm[max(i, j)]) for i, j in pairs if i != j]
        graphs.append((n, edges))
    ei, ptr, n = batch(graphs)
    if ei.shape[1] > 1:  # edges of all graphs interleaved in a random order
        ei = ei[:, torch.tensor(draw(st.permutations(range(ei.shape[1]))))]
    return ei, ptr, n


FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(dag_batches())
def test_fuzz_reference_properties(inputs):
    ei, ptr, n = inputs
    check_properties(reference(ei, ptr, n), ei, ptr, n)


@requires_ext
@FUZZ
@given(dag_batches())
def test_fuzz_compiled_matches_reference(inputs):
    ei, ptr, n = inputs
    assert_same(compiled(ei, ptr, n), reference(ei, ptr, n))


@requires_ext
@FUZZ
@given(dag_batches(), st.data())
def test_fuzz_cycles_reported_identically(inputs, data):
    ei, ptr, n = inputs
    if ei.shape[1] == 0:
        return
    # reverse one edge's copy: u -> v plus v -> u is a cycle (or a self-loop-free 2-cycle)
    e = data.draw(st.integers(0, ei.shape[1] - 1))
    ei = torch.cat([ei, ei[:, e:e + 1].flip(0)], dim=1)
    with pytest.raises(ValueError, match=CYCLE) as from_compiled:
        compiled(ei, ptr, n)
    with pytest.raises(ValueError, match=CYCLE) as from_reference:
        reference(ei, ptr, n)
    assert str(from_compiled.value) == str(from_reference.value)


# --------------------------------------------------------------------------------------------
# CUDA (skipped without a GPU)


def _cuda(sample):
    _, ei, ptr, n = sample
    return ei.cuda(), ptr.cuda(), n


@requires_cuda
@pytest.mark.parametrize("sample", SAMPLES, ids=SAMPLE_IDS)
def test_cuda_matches_cpu(sample):
    _, ei, ptr, n = sample
    out = compiled(*_cuda(sample))
    assert all(t.is_cuda for t in out)
    assert_same(Schedule(*(t.cpu() for t in out)), compiled(ei, ptr, n))


@requires_cuda
def test_cuda_large_batch_and_long_chain():
    rng = random.Random(2)
    graphs = [random_dag(rng, rng.randint(1, 300), 0.03) for _ in range(200)]
    graphs.append((1500, [(i, i + 1) for i in range(1499)]))
    ei, ptr, n = batch(graphs)
    out = compiled(ei.cuda(), ptr.cuda(), n)
    assert_same(Schedule(*(t.cpu() for t in out)), compiled(ei, ptr, n))


@requires_cuda
@pytest.mark.parametrize("case", BAD_INPUTS, ids=[c[0] for c in BAD_INPUTS])
def test_cuda_bad_inputs_same_message_as_cpu(case):
    _, ei, ptr, n, exc, match = case
    with pytest.raises(exc, match="ghn_ext.dag_schedule: " + match) as from_cuda:
        compiled(ei.cuda(), ptr.cuda(), n)
    with pytest.raises(exc) as from_cpu:
        compiled(ei, ptr, n)
    assert str(from_cuda.value) == str(from_cpu.value)


@requires_cuda
def test_cuda_mixed_devices_rejected():
    ei, ptr, n = batch([(2, [(0, 1)])])
    with pytest.raises(ValueError, match="same device"):
        compiled(ei.cuda(), ptr, n)


@requires_cuda
@pytest.mark.parametrize("sample", [s for s in SAMPLES if s[0] in ("diamond", "unequal_batch", "empty_batch")],
                         ids=lambda s: s[0])
def test_cuda_opcheck(sample):
    torch.library.opcheck(torch.ops.ghn_ext.dag_schedule.default, _cuda(sample))


@requires_cuda
@settings(max_examples=60, deadline=None)
@given(dag_batches())
def test_cuda_fuzz_matches_reference(inputs):
    ei, ptr, n = inputs
    out = compiled(ei.cuda(), ptr.cuda(), n)
    assert_same(Schedule(*(t.cpu() for t in out)), reference(ei, ptr, n))
