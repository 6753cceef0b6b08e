"""Issue 29: a hypothesis fuzz over the compiled ops' integer arguments.

Each example takes a valid call of an op and replaces one integer (an entry of an int list, of an
index tensor, a size or the pass count T) by a hostile value: negative, zero, just past a bound,
near 2**31, 2**32, 2**62 or 2**63. The op must then either refuse with a clear error (a Python
exception naming what is wrong, never a signal: a segfault here ends the whole test run) or return
what the pure-PyTorch reference returns for the same arguments. Where the reference accepts a
change but its result would not fit in memory, the fake (meta) kernel's output size is checked
instead of running the kernel.
"""
from __future__ import annotations

import math

import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import ghn_ext.ops._extension as ext
from ghn_ext.ops import HAS_EXTENSION
from ghn_ext.ops.emit import check_emit_args, check_emit_edges_args, emit_edges_reference, emit_reference, numel_of
from ghn_ext.ops.propagate import GNNParams, propagate_reference
from ghn_ext.ops.schedule import Schedule, dag_schedule_reference

# every test but the reference's half of one calls the compiled ops (torch.ops.ghn_ext.*), which exist
# only when the library is built; nothing at module level may name them, so collection works without it
requires_ext = pytest.mark.skipif(not (HAS_EXTENSION and ext.has_kernel("propagate", "cpu")),
                                  reason=f"compiled extension ghn_ext._C not built ({ext.IMPORT_ERROR})")

HOSTILE = st.one_of(
    st.sampled_from([-2 ** 63, -2 ** 62, -2 ** 31, -2, -1, 0, 1, 2, 3, 4, 5, 6, 7, 2 ** 31 - 1, 2 ** 31,
                     2 ** 32, 2 ** 32 + 1, 2 ** 61 + 1, 2 ** 62, 2 ** 63 - 1]),
    st.integers(-2 ** 63, 2 ** 63 - 1))
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
LARGEST_RUN = 2 ** 22  # elements: larger accepted outputs are checked on the fake kernel only


def refused(call) -> BaseException | None:
    """The clear error `call()` raises, or None when it returns."""
    try:
        call()
    except (ValueError, IndexError, TypeError, RuntimeError, OverflowError) as exc:
        event(f"refused: {type(exc).__name__}")  # --hypothesis-show-statistics: how often each outcome
        message = str(exc).strip()
        assert message and "\n" not in message.split("Exception raised from")[0].strip(), message
        return exc
    event("accepted")
    return None


def changed(values: list[int], position: int, value: int) -> list[int]:
    values = list(values)
    values[position % len(values)] = value
    return values


# ------------------------------------------------------------------ emit_weights

BLOCKS = torch.randn(3, 4, 5, 3, 3, generator=torch.Generator().manual_seed(0))
EMIT = {"node_index": [0, 2, 1], "shapes": [4, 5, 3, 3, 9, 2, 1, 1, 3, 11, 1, 3], "anchors": [0, 0, 1, 2, 2, 0]}
SCALES = [1.0, 0.5, 2.0]


def check_emission(compiled, reference, check, blocks, lists, total) -> None:
    try:
        check(blocks, *lists)
    except (ValueError, IndexError, TypeError):
        assert refused(lambda: compiled(blocks, *lists)) is not None, lists
        return
    if total > LARGEST_RUN:  # valid but too large to emit here: the fake kernel sizes it (or its bytes
        with torch._subclasses.fake_tensor.FakeTensorMode() as mode:  # overflow: a clear refusal)
            fake = mode.from_tensor(blocks)
            if refused(lambda: compiled(fake, *lists)) is None:
                assert compiled(fake, *lists).shape == (total,)
        return
    torch.testing.assert_close(compiled(blocks, *lists), reference(blocks, *lists), rtol=0, atol=0)


@requires_ext
@FUZZ
@given(field=st.sampled_from(sorted(EMIT)), position=st.integers(0, 11), value=HOSTILE)
def test_emit_weights_refuses_or_matches_the_reference(field, position, value):
    lists = {**EMIT, field: changed(EMIT[field], position, value)}
    args = [lists["node_index"], lists["shapes"], lists["anchors"], SCALES]
    total = sum(numel_of(lists["shapes"])) if min(lists["shapes"]) > 0 else 0
    check_emission(torch.ops.ghn_ext.emit_weights.default, emit_reference, check_emit_args, BLOCKS, args, total)


@pytest.mark.parametrize("which", [pytest.param("compiled", marks=requires_ext), "reference"])
def test_an_emitted_buffer_no_int64_can_size_is_refused_alike(which):
    """Found by the fuzz: the reference and the fake kernel summed the sizes unchecked, so a 2**62-row
    target reached torch.empty and failed there with an unrelated message."""
    # looked up here, not at collection: without the compiled library there is no such op to name
    emit = torch.ops.ghn_ext.emit_weights.default if which == "compiled" else emit_reference
    with pytest.raises(ValueError, match=r"target 1: shape \(4611686018427387904, 5, 3, 3\) makes the emitted "
                                         "buffer too large"):
        emit(BLOCKS, [0, 1], [4, 5, 3, 3, 2 ** 62, 5, 3, 3], [0, 0, 0, 0], [1.0, 1.0])


@requires_ext
@FUZZ
@given(position=st.integers(0, 4), value=HOSTILE)
def test_emit_weights_backward_refuses_or_matches_the_reference(position, value):
    """The backward sums into a zero tensor of block_shape, an integer list of its own."""
    args = [EMIT["node_index"], EMIT["shapes"], EMIT["anchors"], SCALES]
    grad = torch.ones(sum(numel_of(EMIT["shapes"])))
    block_shape = changed(list(BLOCKS.shape), position, value)
    backward = torch.ops.ghn_ext._emit_weights_backward.default
    try:
        check_emit_args(torch.empty(block_shape, device="meta"), *args)
    except (ValueError, IndexError, TypeError, RuntimeError):
        assert refused(lambda: backward(grad, *args, block_shape)) is not None, block_shape
        return
    if math.prod(block_shape) > LARGEST_RUN:
        with torch._subclasses.fake_tensor.FakeTensorMode() as mode:
            assert backward(mode.from_tensor(grad), *args, block_shape).shape == tuple(block_shape)
        return
    _, vjp = torch.func.vjp(lambda b: emit_reference(b, *args), torch.zeros(block_shape))
    torch.testing.assert_close(backward(grad, *args, block_shape), vjp(grad)[0])


# ------------------------------------------------------------------ emit_edge_weights

EDGES = {"piece_ptr": [0, 2, 3], "piece_block": [0, 2, 1], "piece_channels": [3, 6, 2],
         "shapes": [4, 9, 3, 3, 7, 2, 1, 1], "anchors": [0, 0, 2, 1]}


@requires_ext
@FUZZ
@given(field=st.sampled_from(sorted(EDGES)), position=st.integers(0, 7), value=HOSTILE)
def test_emit_edge_weights_refuses_or_matches_the_reference(field, position, value):
    lists = {**EDGES, field: changed(EDGES[field], position, value)}
    args = [lists[k] for k in ("piece_ptr", "piece_block", "piece_channels", "shapes", "anchors")] + [[1.0, 0.5]]
    total = sum(numel_of(lists["shapes"])) if min(lists["shapes"]) > 0 else 0
    check_emission(torch.ops.ghn_ext.emit_edge_weights.default, emit_edges_reference, check_emit_edges_args,
                   BLOCKS, args, total)


# ------------------------------------------------------------------ dag_schedule

EDGE_INDEX = torch.tensor([[0, 0, 1, 3, 5, 5], [1, 2, 2, 4, 6, 7]])
NODE_PTR = torch.tensor([0, 3, 5, 8])


@requires_ext
@FUZZ
@given(field=st.sampled_from(["edge_index", "node_ptr", "num_nodes"]), position=st.integers(0, 11), value=HOSTILE)
def test_dag_schedule_refuses_or_matches_the_reference(field, position, value):
    edge_index, node_ptr, num_nodes = EDGE_INDEX.clone(), NODE_PTR.clone(), 8
    if field == "edge_index":
        edge_index.view(-1)[position % edge_index.numel()] = value
    elif field == "node_ptr":
        node_ptr[position % len(node_ptr)] = value
    else:
        num_nodes = value
    expected = None
    if refused(lambda: dag_schedule_reference(edge_index, node_ptr, num_nodes)) is None:
        expected = dag_schedule_reference(edge_index, node_ptr, num_nodes)
    got = refused(lambda: torch.ops.ghn_ext.dag_schedule.default(edge_index, node_ptr, num_nodes))
    assert (got is None) == (expected is not None), (field, position, value, got)
    if expected is not None:
        for a, b in zip(torch.ops.ghn_ext.dag_schedule.default(edge_index, node_ptr, num_nodes), expected):
            assert torch.equal(a, b)


# ------------------------------------------------------------------ propagate

D, HM = 4, 5
BLOCK_PTR, GRAPH_BLOCK_PTR = torch.tensor([0, 3, 5, 8]), torch.tensor([0, 2, 3])
SCHEDULE = dag_schedule_reference(EDGE_INDEX, BLOCK_PTR, 8)  # the same schedule; no warning at collection
INDEX = {"block_ptr": BLOCK_PTR, "graph_block_ptr": GRAPH_BLOCK_PTR, "order": SCHEDULE.order,
         "in_ptr": SCHEDULE.in_ptr, "in_src": SCHEDULE.in_src, "out_ptr": SCHEDULE.out_ptr,
         "out_dst": SCHEDULE.out_dst}
_g = torch.Generator().manual_seed(1)
PARAMS = GNNParams(*[torch.randn(s, generator=_g, dtype=torch.float64) * 0.4 for s in
                     [(2, HM, D), (2, HM), (2, D, HM), (2, D), (2, 3 * D, D), (2, 3 * D, D), (2, 3 * D), (2, 3 * D)]])
H0 = torch.randn(8, D, generator=_g, dtype=torch.float64)


def op_args(index, T):
    return (H0, *(index[k] for k in INDEX), *PARAMS, T, True, True)


@requires_ext
@FUZZ
@given(field=st.sampled_from(sorted(INDEX)), position=st.integers(0, 11), value=HOSTILE)
def test_propagate_refuses_a_hostile_index_or_matches_the_reference(field, position, value):
    index = {k: t.clone() for k, t in INDEX.items()}
    index[field][position % len(index[field])] = value
    got = refused(lambda: torch.ops.ghn_ext.propagate.default(*op_args(index, 2)))
    if got is not None:
        assert "propagate" in str(got), got
        return
    # accepted: then the change kept a valid batch, which the reference propagates alike
    schedule = Schedule(index["order"], SCHEDULE.level, SCHEDULE.reverse_order, index["in_ptr"], index["in_src"],
                        index["out_ptr"], index["out_dst"])
    h, saved = torch.ops.ghn_ext.propagate.default(*op_args(index, 2))
    expected = propagate_reference(H0, index["block_ptr"], index["graph_block_ptr"], schedule, PARAMS, 2)
    torch.testing.assert_close(h, expected, rtol=1e-10, atol=1e-12)
    grads = torch.ops.ghn_ext._propagate_backward.default(torch.ones_like(h), h, saved, *op_args(index, 2)[1:])
    assert all(torch.isfinite(g).all() for g in grads)


@requires_ext
@FUZZ
@given(T=HOSTILE)
def test_propagate_refuses_a_hostile_pass_count_or_sizes_its_buffer(T):
    got = refused(lambda: torch.ops.ghn_ext.propagate.default(*op_args(INDEX, T))) if T <= 3 else None
    if T < 1:
        assert got is not None and "T must be at least 1" in str(got)
        return
    if T <= 3:  # small enough to run: the reference's result
        h, saved = torch.ops.ghn_ext.propagate.default(*op_args(INDEX, T))
        torch.testing.assert_close(h, propagate_reference(H0, BLOCK_PTR, GRAPH_BLOCK_PTR, SCHEDULE, PARAMS, T),
                                   rtol=1e-10, atol=1e-12)
        assert saved.shape == (2 * T * 8, D)
        return
    # larger: the fake kernel sizes the buffer of 2*T*N rows, or refuses where it cannot be counted
    with torch._subclasses.fake_tensor.FakeTensorMode() as mode:
        fake = [mode.from_tensor(a) if isinstance(a, torch.Tensor) else a for a in op_args(INDEX, T)]
        got = refused(lambda: torch.ops.ghn_ext.propagate.default(*fake))
        if 2 * T * 8 * D * 8 > 2 ** 63 - 1:
            assert got is not None and "more bytes than an int64 can count" in str(got)
        else:
            assert got is None, got
            assert torch.ops.ghn_ext.propagate.default(*fake)[1].shape == (2 * T * 8, D)
    # and the compiled kernel refuses the same counts before it allocates anything
    if 2 * T * 8 * D * 8 > 2 ** 63 - 1:
        got = refused(lambda: torch.ops.ghn_ext._propagate_backward.default(
            torch.ones_like(H0), H0, H0, *op_args(INDEX, T)[1:]))
        assert got is not None and "more bytes than an int64 can count" in str(got)
