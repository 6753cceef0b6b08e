"""Architecture graphs: the computation graph (a DAG of operations) that a GHN reads.

A graph holds nodes in block order: every node names an op from the vocabulary in
``ghn_ext.core.primitives`` plus attributes (output channels, stride, scale, exit flag, ...), and
directed edges carry activations from node to node. Blocks are the repeated modules of paper Sec. 4.3:
the stacked GHN propagates inside each block and hands a graph embedding from block to block, so a
node's block never decreases along an edge.
"""
from __future__ import annotations

import hashlib
import heapq
import json
import shutil
import subprocess
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

import torch

from ghn_ext.core.drawing import draw_png
from ghn_ext.core.primitives import OP_INDEX, PRIMITIVES

FORMAT = "ghn_ext.graph/1"


class GraphError(ValueError):
    """An architecture graph is malformed (cycle, unknown op, dangling node, bad edge)."""


@dataclass(frozen=True)
class Node:
    op: str
    block: int = 0
    channels: int = 0      # output channels (classes for a classifier)
    stride: int = 1
    # spatial size the node works at (anytime space): its inputs are resampled to it, concatenated
    # and bottlenecked before its op (primitives.concat_bottleneck); 0 = inherited, inputs summed
    scale: int = 0
    exit: bool = False     # feeds an early-exit classifier (anytime space)
    name: str = ""         # free-form label, e.g. the NAS-Bench-201 edge "1<-0"

    def to_dict(self) -> dict[str, Any]:
        default = Node(op=self.op)
        return {k: v for k, v in asdict(self).items() if k == "op" or v != getattr(default, k)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Node":
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise GraphError(f"node has unknown attributes {sorted(unknown)}; known: {sorted(known)}")
        if "op" not in d:
            raise GraphError(f"node {d} has no 'op'")
        for f in fields(cls):  # JSON may carry any type; reject before validate() compares them
            if f.name in d:
                want = type(getattr(cls, f.name, ""))  # the default's type; str for `op`
                ok = isinstance(d[f.name], want) and (want is bool or not isinstance(d[f.name], bool))
                if not ok:
                    raise GraphError(f"node {d}: attribute {f.name!r} must be {want.__name__}")
        return cls(**d)


@dataclass(frozen=True)
class ArchGraph:
    nodes: tuple[Node, ...]
    edges: tuple[tuple[int, int], ...]
    space: str = "custom"
    meta: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self):
        object.__setattr__(self, "nodes", tuple(self.nodes))
        object.__setattr__(self, "edges", tuple((int(u), int(v)) for u, v in self.edges))

    # ----------------------------------------------------------------------------- structure
    def __len__(self) -> int:
        return len(self.nodes)

    @property
    def num_blocks(self) -> int:
        return self.nodes[-1].block + 1 if self.nodes else 0

    def block_ranges(self) -> list[tuple[int, int]]:
        """[start, end) node ranges of each block (nodes are stored in block order)."""
        bounds, start = [], 0
        for i in range(1, len(self.nodes) + 1):
            if i == len(self.nodes) or self.nodes[i].block != self.nodes[start].block:
                bounds.append((start, i))
                start = i
        return bounds

    def predecessors(self) -> list[list[int]]:
        preds: list[list[int]] = [[] for _ in self.nodes]
        for u, v in self.edges:
            preds[v].append(u)
        return [sorted(p) for p in preds]

    def successors(self) -> list[list[int]]:
        succ: list[list[int]] = [[] for _ in self.nodes]
        for u, v in self.edges:
            succ[u].append(v)
        return [sorted(s) for s in succ]

    def op_indices(self) -> list[int]:
        return [OP_INDEX[n.op] for n in self.nodes]

    # ----------------------------------------------------------------------------- validation
    def validate(self) -> "ArchGraph":
        """Raise GraphError naming the first problem found; return self when the graph is sound."""
        n = len(self.nodes)
        if n == 0:
            raise GraphError("graph has no nodes")
        for i, node in enumerate(self.nodes):
            if node.op not in PRIMITIVES:
                raise GraphError(f"node {i}: unknown op {node.op!r}; known ops: {', '.join(PRIMITIVES)}")
            if i and node.block < self.nodes[i - 1].block:
                raise GraphError(f"node {i}: block {node.block} after block {self.nodes[i-1].block}; "
                                 "nodes must be stored in block order")
            if node.stride < 1 or (node.stride > 1 and not PRIMITIVES[node.op].allows_stride):
                raise GraphError(f"node {i} ({node.op}): invalid stride {node.stride}")
            if node.scale < 0:
                raise GraphError(f"node {i} ({node.op}): negative scale {node.scale}")
            if node.scale and (PRIMITIVES[node.op].combine != "apply_sum" or node.stride != 1):
                raise GraphError(f"node {i} ({node.op}): only stride-1 operation nodes can have a scale "
                                 "(the scale sets their resolution)")
        for e, (u, v) in enumerate(self.edges):
            if not (0 <= u < n and 0 <= v < n):
                raise GraphError(f"edge {e} ({u} -> {v}): node index out of range [0, {n})")
            if self.nodes[u].block > self.nodes[v].block:
                raise GraphError(f"edge {e} ({u} -> {v}) goes from block {self.nodes[u].block} "
                                 f"back to block {self.nodes[v].block}")
        self.topological_order()  # raises on a cycle
        # Checked before dead ends: without a classifier every sink would otherwise be reported as a
        # dead end and this clearer message could never be reached.
        if not any(PRIMITIVES[nd.op].combine == "head" for nd in self.nodes):
            raise GraphError("graph has no output (classifier) node: the output is unreachable")
        preds, succs = self.predecessors(), self.successors()
        for i, node in enumerate(self.nodes):
            combine = PRIMITIVES[node.op].combine
            if combine == "source":
                if preds[i]:
                    raise GraphError(f"node {i} ({node.op}) is a network input but has incoming edges")
            elif not preds[i]:
                raise GraphError(f"node {i} ({node.op}) has no input")
            if not succs[i] and combine != "head":
                raise GraphError(f"node {i} ({node.op}) reaches no output: its result is never used "
                                 "and it is not a classifier")
            if node.exit and not any(PRIMITIVES[self.nodes[s].op].combine == "head" for s in succs[i]):
                raise GraphError(f"node {i} ({node.op}) is marked as an exit but feeds no classifier")
        return self

    def levels(self) -> list[int]:
        """Longest-path depth of each node from the graph's sources."""
        level = [0] * len(self.nodes)
        preds = self.predecessors()
        for v in self.topological_order():
            level[v] = max((level[u] + 1 for u in preds[v]), default=0)
        return level

    def topological_order(self) -> list[int]:
        """Kahn's algorithm, smallest node index first; GraphError on a cycle."""
        indeg = [0] * len(self.nodes)
        succ = self.successors()
        for _, v in self.edges:
            indeg[v] += 1
        ready = [i for i, d in enumerate(indeg) if d == 0]
        heapq.heapify(ready)
        order = []
        while ready:
            u = heapq.heappop(ready)
            order.append(u)
            for v in succ[u]:
                indeg[v] -= 1
                if indeg[v] == 0:
                    heapq.heappush(ready, v)
        if len(order) != len(self.nodes):
            stuck = sorted(i for i, d in enumerate(indeg) if d > 0)
            raise GraphError(f"graph contains a cycle through nodes {stuck[:10]}")
        return order

    # ----------------------------------------------------------------------------- serialisation
    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "space": self.space, "nodes": [n.to_dict() for n in self.nodes],
                "edges": [list(e) for e in self.edges], "meta": self.meta}

    def to_json(self, indent: Optional[int] = None) -> str:
        return json.dumps(self.to_dict(), indent=indent, sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ArchGraph":
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise GraphError(f"not an architecture graph (expected format {FORMAT!r})")
        try:
            nodes = [Node.from_dict(n) for n in d["nodes"]]
            edges = [tuple(e) for e in d["edges"]]
            if any(len(e) != 2 or not all(isinstance(i, int) and not isinstance(i, bool) for i in e)
                   for e in edges):
                raise GraphError("every edge must be a pair of node indices [source, destination]")
        except (KeyError, TypeError) as exc:
            raise GraphError(f"malformed architecture graph: {exc}") from exc
        return cls(nodes, edges, d.get("space", "custom"), d.get("meta", {})).validate()

    @classmethod
    def from_json(cls, text: str) -> "ArchGraph":
        try:
            d = json.loads(text)
        except json.JSONDecodeError as exc:
            raise GraphError(f"architecture is not valid JSON: {exc}") from exc
        return cls.from_dict(d)

    def stable_hash(self) -> str:
        """Content hash of the structure (nodes, edges, space); independent of meta and Python runs."""
        canonical = json.dumps({"space": self.space, "nodes": [n.to_dict() for n in self.nodes],
                                "edges": sorted(map(list, self.edges))}, sort_keys=True,
                               separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]

    def with_meta(self, **meta) -> "ArchGraph":
        return replace(self, meta={**self.meta, **meta})

    # ----------------------------------------------------------------------------- rendering
    def to_dot(self, title: str = "") -> str:
        """Graphviz DOT in the style of the paper's Fig. 7: one box per node labelled with its op."""
        lines = ["digraph arch {", "  rankdir=TB;", '  node [shape=box, style="rounded,filled", '
                 'fillcolor="#eef3fb", fontname="Helvetica"];']
        if title:
            lines.append(f'  labelloc="t"; label="{title}";')
        for b, (start, end) in enumerate(self.block_ranges()):
            lines.append(f"  subgraph cluster_{b} {{ style=dashed; color=gray; label=\"block {b}\";")
            for i in range(start, end):
                label = self.node_label(i).replace("\n", "\\n")
                color = ', fillcolor="#f4b6b6"' if self.nodes[i].exit else ""
                lines.append(f'    n{i} [label="{label}"{color}];')
            lines.append("  }")
        lines += [f"  n{u} -> n{v};" for u, v in self.edges]
        lines.append("}")
        return "\n".join(lines)

    def node_label(self, i: int) -> str:
        """Node i's op, and its channels, stride and scale where it has them (two lines)."""
        nd = self.nodes[i]
        return nd.op + (f"\n{nd.channels}ch" if nd.channels else "") + \
            (f" /{nd.stride}" if nd.stride > 1 else "") + (f" @{nd.scale}px" if nd.scale else "")

    def render_png(self, path: str | Path, title: str = "", engine: str = "auto") -> Path:
        """A PNG of the graph: with the graphviz `dot` binary where it is installed (`engine` "auto" or
        "graphviz"), else drawn with matplotlib (:mod:`ghn_ext.core.drawing`; `engine` "matplotlib")."""
        if engine not in ("auto", "graphviz", "matplotlib"):
            raise GraphError(f"unknown rendering engine {engine!r}; choose auto, graphviz or matplotlib")
        dot = shutil.which("dot") if engine != "matplotlib" else None
        if dot is None:
            if engine == "graphviz":
                raise GraphError("rendering with graphviz needs its `dot` binary (e.g. `apt-get install "
                                 "graphviz`); engine='auto' draws with matplotlib without it")
            return draw_png(self, path, title)
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([dot, "-Tpng", "-o", str(path)], input=self.to_dot(title).encode(),
                       check=True, capture_output=True)
        return path

    def subgraph_of_block(self, block: int) -> "ArchGraph":
        """One block on its own (edges from earlier blocks dropped); handy for drawing a cell."""
        start, end = self.block_ranges()[block]
        nodes = [replace(n, block=0) for n in self.nodes[start:end]]
        edges = [(u - start, v - start) for u, v in self.edges if start <= u and v < end]
        return ArchGraph(nodes, edges, self.space, {"block": block})


@dataclass(frozen=True)
class GraphBatch:
    """Many graphs as one: node features and global edge indices, with offsets per graph and block.

    ``node_ptr[g]:node_ptr[g+1]`` are graph g's nodes; ``block_ptr`` lists the node offsets of every
    block of every graph in order and ``graph_block_ptr[g]:graph_block_ptr[g+1]`` indexes graph g's
    blocks in it. ``edge_index`` holds all edges; ``block_edge_mask`` marks those inside one block
    (the edges the stacked GHN propagates over).
    """
    graphs: tuple[ArchGraph, ...]
    op_index: torch.Tensor        # (N,) int64
    edge_index: torch.Tensor      # (2, E) int64, global node ids
    node_ptr: torch.Tensor        # (B+1,) int64
    block_ptr: torch.Tensor       # (num_blocks_total+1,) int64
    graph_block_ptr: torch.Tensor  # (B+1,) int64
    block_edge_mask: torch.Tensor  # (E,) bool

    @classmethod
    def from_graphs(cls, graphs: Iterable[ArchGraph]) -> "GraphBatch":
        graphs = tuple(graphs)
        if not graphs:
            raise GraphError("cannot batch an empty list of graphs")
        ops, edges, same_block, node_ptr, block_ptr, gb_ptr = [], [], [], [0], [0], [0]
        for g in graphs:
            off = node_ptr[-1]
            ops += g.op_indices()
            edges += [(u + off, v + off) for u, v in g.edges]
            same_block += [g.nodes[u].block == g.nodes[v].block for u, v in g.edges]
            block_ptr += [off + end for _, end in g.block_ranges()]
            node_ptr.append(off + len(g))
            gb_ptr.append(len(block_ptr) - 1)
        long = lambda x: torch.tensor(x, dtype=torch.int64)  # noqa: E731
        edge_index = long(edges).reshape(-1, 2).t().contiguous()
        return cls(graphs, long(ops), edge_index, long(node_ptr), long(block_ptr), long(gb_ptr),
                   torch.tensor(same_block, dtype=torch.bool))

    @property
    def num_graphs(self) -> int:
        return len(self.graphs)

    @property
    def num_nodes(self) -> int:
        return int(self.node_ptr[-1])


def as_graph_list(arch_or_batch: ArchGraph | Sequence[ArchGraph] | GraphBatch) -> tuple[ArchGraph, ...]:
    if isinstance(arch_or_batch, ArchGraph):
        return (arch_or_batch,)
    if isinstance(arch_or_batch, GraphBatch):
        return arch_or_batch.graphs
    return tuple(arch_or_batch)
