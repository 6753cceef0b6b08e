"""Drawing an architecture graph as a PNG without graphviz: nodes in rows by their depth (the longest path
from an input), labelled boxes as in the paper's Fig. 7, arrows for the edges (matplotlib)."""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Protocol, Sequence

# The drawing names only what it reads of a graph, so this module imports nothing of ghn_ext and
# ghn_ext.core.graph (whose ArchGraph.render_png draws with it) can import it without a cycle.


class DrawableNode(Protocol):
    @property
    def exit(self) -> bool: ...  # drawn in red: feeds an early-exit classifier


class DrawableGraph(Protocol):
    """What :func:`draw_png` needs of a graph; :class:`ghn_ext.core.graph.ArchGraph` has it."""

    @property
    def nodes(self) -> Sequence[DrawableNode]: ...

    @property
    def edges(self) -> Sequence[tuple[int, int]]: ...

    def predecessors(self) -> list[list[int]]: ...

    def topological_order(self) -> list[int]: ...

    def node_label(self, i: int) -> str: ...


def draw_png(graph: DrawableGraph, path: str | Path, title: str = "") -> Path:
    """Draw `graph` (an :class:`~ghn_ext.core.graph.ArchGraph`) to the PNG file `path`; returns it."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    preds, depth = graph.predecessors(), {}
    for v in graph.topological_order():
        depth[v] = max((depth[u] + 1 for u in preds[v]), default=0)
    rows: dict[int, list[int]] = defaultdict(list)
    for v in sorted(depth):
        rows[depth[v]].append(v)
    width, height = max(len(r) for r in rows.values()), len(rows)
    pos = {v: ((i + 0.5) * width / len(row), -d) for d, row in rows.items() for i, v in enumerate(row)}
    fig, ax = plt.subplots(figsize=(max(4.0, 2.4 * width), max(3.0, 1.0 * height + 1)))
    for u, v in graph.edges:
        ax.annotate("", xy=pos[v], xytext=pos[u],
                    arrowprops=dict(arrowstyle="->", color="#6b7a8f", shrinkA=14, shrinkB=14, lw=1))
    for v, (x, y) in pos.items():
        face = "#f4b6b6" if graph.nodes[v].exit else "#eef3fb"
        ax.text(x, y, graph.node_label(v), ha="center", va="center", fontsize=8,
                bbox=dict(boxstyle="round,pad=0.4", fc=face, ec="#4a6fa5"))
    ax.set_xlim(0, width)
    ax.set_ylim(-height + 0.4, 0.6)
    ax.axis("off")
    if title:
        ax.set_title(title, fontsize=10)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path
