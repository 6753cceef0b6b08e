"""``dag_schedule``: a deterministic topological schedule for a batch of DAGs.

The GHN propagates messages over each architecture's computation graph one node at a time in
topological order and back (paper Eq. 15). This op turns a batch of graphs, given as a global
``edge_index`` and per-graph node offsets ``node_ptr``, into everything the propagation kernels need:

=============== ======= ===================================================================
output          shape   meaning
=============== ======= ===================================================================
order           (N,)    for graph g, ``order[node_ptr[g]:node_ptr[g+1]]`` holds the graph's
                        nodes sorted by (level, node id): a deterministic topological order
level           (N,)    longest-path depth from the graph's sources (sources are level 0)
reverse_order   (N,)    each graph's segment of ``order`` reversed (the backward pass)
in_ptr, in_src  (N+1,), incoming edges as CSR: the sources of node v are
                (E,)    ``in_src[in_ptr[v]:in_ptr[v+1]]``, ascending (duplicates kept)
out_ptr,        (N+1,), outgoing edges as CSR: the destinations of node u are
out_dst         (E,)    ``out_dst[out_ptr[u]:out_ptr[u+1]]``, ascending (duplicates kept)
=============== ======= ===================================================================

Inputs (int64): ``edge_index`` (2, E), row 0 sources and row 1 destinations as global node ids;
``node_ptr`` (B+1,), ``node_ptr[0] == 0``, non-decreasing, ``node_ptr[B] == num_nodes``; graph g
owns nodes ``[node_ptr[g], node_ptr[g+1])`` and every edge stays inside one graph.

Invalid inputs raise ``TypeError`` (dtype) or ``ValueError`` (shape, device, offsets, an edge index
out of range, an edge crossing graphs, a cycle), with the same text from the compiled kernels
(CPU, CUDA) and from :func:`dag_schedule_reference`. All messages start with
``"ghn_ext.dag_schedule: "``.
"""
from __future__ import annotations

from collections import deque
from typing import NamedTuple

import torch
from torch import Tensor

from ghn_ext.ops._extension import HAS_EXTENSION, has_kernel, use_extension

__all__ = ["Schedule", "dag_schedule", "dag_schedule_reference"]

_OP = "ghn_ext.dag_schedule: "


class Schedule(NamedTuple):
    """Result of :func:`dag_schedule` (all int64 tensors on the inputs' device)."""

    order: Tensor
    level: Tensor
    reverse_order: Tensor
    in_ptr: Tensor
    in_src: Tensor
    out_ptr: Tensor
    out_dst: Tensor


def _check_meta(edge_index: Tensor, node_ptr: Tensor) -> None:
    """Checks that read no tensor data (shared by the reference and the fake kernel)."""
    for name, t in (("edge_index", edge_index), ("node_ptr", node_ptr)):
        if not isinstance(t, Tensor):
            raise TypeError(f"{_OP}{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dtype != torch.long:
            raise TypeError(f"{_OP}{name} must be an int64 (torch.long) tensor, got {t.dtype}")
    if edge_index.dim() != 2 or edge_index.shape[0] != 2:
        raise ValueError(f"{_OP}edge_index must have shape (2, E), got shape {list(edge_index.shape)}")
    if node_ptr.dim() != 1 or node_ptr.shape[0] < 1:
        raise ValueError(
            f"{_OP}node_ptr must be a 1-D tensor of B + 1 >= 1 offsets, got shape {list(node_ptr.shape)}"
        )
    if edge_index.device != node_ptr.device:
        raise ValueError(
            f"{_OP}edge_index and node_ptr must be on the same device, got "
            f"{edge_index.device} and {node_ptr.device}"
        )


def dag_schedule_reference(edge_index: Tensor, node_ptr: Tensor, num_nodes: int) -> Schedule:
    """Pure-Python/PyTorch specification of ``ghn_ext::dag_schedule`` (see the module docstring).

    Kahn's algorithm per graph; O(N + E) apart from the per-node neighbour sorts.
    """
    _check_meta(edge_index, node_ptr)
    n = int(num_nodes)
    if n < 0:
        raise ValueError(f"{_OP}num_nodes must be non-negative, got {n}")
    device = edge_index.device
    ptr = node_ptr.tolist()
    num_graphs = len(ptr) - 1
    src, dst = edge_index.tolist()

    # node offsets
    if ptr[0] != 0:
        raise ValueError(f"{_OP}node_ptr[0] must be 0, got {ptr[0]}")
    for g in range(num_graphs):
        if ptr[g] > ptr[g + 1]:
            raise ValueError(
                f"{_OP}node_ptr must be non-decreasing, but node_ptr[{g}] = {ptr[g]} > "
                f"node_ptr[{g + 1}] = {ptr[g + 1]}"
            )
    if ptr[num_graphs] != n:
        raise ValueError(
            f"{_OP}node_ptr[{num_graphs}] (last entry) must equal num_nodes = {n}, got {ptr[num_graphs]}"
        )
    graph_of = [0] * n
    for g in range(num_graphs):
        for v in range(ptr[g], ptr[g + 1]):
            graph_of[v] = g

    # edges: in range, inside one graph (the first offending edge is reported)
    for e, (u, v) in enumerate(zip(src, dst)):
        if not 0 <= u < n:
            raise ValueError(f"{_OP}edge {e} has source node index {u} out of range [0, {n})")
        if not 0 <= v < n:
            raise ValueError(f"{_OP}edge {e} has destination node index {v} out of range [0, {n})")
        if graph_of[u] != graph_of[v]:
            raise ValueError(
                f"{_OP}edge {e} ({u} -> {v}) crosses graphs: source node {u} is in graph "
                f"{graph_of[u]} but destination node {v} is in graph {graph_of[v]}; "
                "edges must stay inside one graph"
            )

    # adjacency, neighbours ascending
    preds: list[list[int]] = [[] for _ in range(n)]
    succs: list[list[int]] = [[] for _ in range(n)]
    for u, v in zip(src, dst):
        succs[u].append(v)
        preds[v].append(u)
    for lst in preds + succs:
        lst.sort()

    # Kahn per graph: a node's level is 1 + the largest level of its predecessors
    level = [0] * n
    order: list[int] = []
    reverse_order: list[int] = []
    for g in range(num_graphs):
        nodes = range(ptr[g], ptr[g + 1])
        indeg = {v: len(preds[v]) for v in nodes}
        ready = deque(v for v in nodes if indeg[v] == 0)
        done = 0
        while ready:
            u = ready.popleft()
            done += 1
            for w in succs[u]:
                level[w] = max(level[w], level[u] + 1)
                indeg[w] -= 1
                if indeg[w] == 0:
                    ready.append(w)
        if done != len(nodes):
            raise ValueError(f"{_OP}graph {g} contains a cycle (self-loop or cycle among its nodes)")
        segment = sorted(nodes, key=lambda v: (level[v], v))
        order.extend(segment)
        reverse_order.extend(reversed(segment))

    def as_tensor(values: list[int]) -> Tensor:
        return torch.tensor(values, dtype=torch.long, device=device)

    def offsets(lists: list[list[int]]) -> list[int]:
        out = [0]
        for lst in lists:
            out.append(out[-1] + len(lst))
        return out

    return Schedule(
        order=as_tensor(order),
        level=as_tensor(level),
        reverse_order=as_tensor(reverse_order),
        in_ptr=as_tensor(offsets(preds)),
        in_src=as_tensor([u for lst in preds for u in lst]),
        out_ptr=as_tensor(offsets(succs)),
        out_dst=as_tensor([v for lst in succs for v in lst]),
    )


def dag_schedule(edge_index: Tensor, node_ptr: Tensor, num_nodes: int | None = None) -> Schedule:
    """Topological schedule of a batch of DAGs (see the module docstring for the outputs).

    Calls the compiled ``torch.ops.ghn_ext.dag_schedule`` when the extension is built (and
    ``GHN_EXT_REFERENCE`` is not set) and has a kernel for the inputs' device; otherwise the
    pure-PyTorch :func:`dag_schedule_reference`. ``num_nodes`` defaults to ``node_ptr[-1]`` (one
    device-to-host read); pass it to avoid that.
    """
    if num_nodes is None:
        if isinstance(node_ptr, Tensor) and node_ptr.dim() == 1 and node_ptr.shape[0] >= 1:
            num_nodes = int(node_ptr[-1])
        else:
            _check_meta(edge_index, node_ptr)  # raises the shape/type error
    if (
        isinstance(edge_index, Tensor)
        and use_extension()
        and has_kernel("dag_schedule", edge_index.device)
    ):
        return Schedule(*torch.ops.ghn_ext.dag_schedule.default(edge_index, node_ptr, num_nodes))
    return dag_schedule_reference(edge_index, node_ptr, num_nodes)


if HAS_EXTENSION:

    @torch.library.register_fake("ghn_ext::dag_schedule")
    def _dag_schedule_fake(edge_index, node_ptr, num_nodes):
        # output sizes come from num_nodes (a SymInt) and E = edge_index.shape[1], never from data
        _check_meta(edge_index, node_ptr)
        torch._check(num_nodes >= 0, lambda: f"{_OP}num_nodes must be non-negative, got {num_nodes}")
        num_edges = edge_index.shape[1]

        def new(size):
            return edge_index.new_empty((size,), dtype=torch.long)

        return (
            new(num_nodes),
            new(num_nodes),
            new(num_nodes),
            new(num_nodes + 1),
            new(num_edges),
            new(num_nodes + 1),
            new(num_edges),
        )
