"""Anytime networks: a graph with several classifiers run exit by exit, cheapest first.

The exits are ordered greedily: next comes the exit whose not-yet-computed ancestors cost the fewest
FLOPs (ties: lower node index), and running it computes exactly those. An exit's FLOPs are cumulative:
everything computed up to and including its classifier, which is what a prediction at that exit costs
when the network runs from the start. Given a FLOPs budget the network stops before the first exit it
cannot afford.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from torch import Tensor

from ghn_ext.core.graph import ArchGraph, GraphError
from ghn_ext.core.primitives import PRIMITIVES
from ghn_ext.nets.network import ArchNetwork, NodeWeights, node_flops, run_network
from ghn_ext.core.checks import InputError


@dataclass(frozen=True)
class Exit:
    head: int                # the classifier node
    nodes: tuple[int, ...]   # nodes first computed for this exit, in order, ending with `head`
    flops: int               # cumulative FLOPs on one image up to this exit's prediction


def exit_schedule(graph: ArchGraph, input_size: tuple[int, int, int] = (3, 32, 32)) -> list[Exit]:
    """Every exit of `graph` in the order an anytime run reaches them (see the module docstring)."""
    heads = [v for v, n in enumerate(graph.nodes) if PRIMITIVES[n.op].combine == "head"]
    if not heads:
        raise GraphError("graph has no classifier, so no exit")
    cost, preds, topo = node_flops(graph, input_size), graph.predecessors(), graph.topological_order()
    rank = {v: i for i, v in enumerate(topo)}
    ancestors: dict[int, set[int]] = {}
    for v in topo:  # each node with everything it depends on
        ancestors[v] = {v}.union(*(ancestors[u] for u in preds[v]))
    done: set[int] = set()
    schedule, total = [], 0
    while len(schedule) < len(heads):
        todo = [h for h in heads if h not in done]
        head = min(todo, key=lambda h: (sum(cost[u] for u in ancestors[h] - done), h))
        new = sorted(ancestors[head] - done, key=rank.__getitem__)
        total += sum(cost[u] for u in new)
        done |= ancestors[head]
        schedule.append(Exit(head, tuple(new), total))
    return schedule


def exits_within(schedule: list[Exit], budget: Optional[float]) -> list[Exit]:
    """The exits an anytime run reaches with `budget` FLOPs per image (all of them without one)."""
    if budget is None:
        return list(schedule)
    if budget < 0:
        raise InputError(f"a FLOPs budget must be non-negative, got {budget}")
    return [e for e in schedule if e.flops <= budget]


def run_anytime(graph: ArchGraph, x: Tensor, weights: NodeWeights, schedule: list[Exit],
                budget: Optional[float] = None, norm_stats=None, training: bool = True) -> list[Tensor]:
    """Logits of every exit reached within `budget` (FLOPs per image), in schedule order; nodes the
    affordable exits do not need are never computed. An empty list when not even the first exit fits."""
    reached = exits_within(schedule, budget)
    if not reached:
        return []
    order = [v for e in reached for v in e.nodes]
    out = run_network(graph, x, weights, norm_stats, training, order=order)
    return out if isinstance(out, list) else [out]


class AnytimeNetwork(ArchNetwork):
    """An anytime graph as a module: `net(x)` gives every exit's logits in order of cost,
    `net(x, budget=f)` only those reachable within f FLOPs per image; `net.exit_flops` their costs."""

    def __init__(self, graph: ArchGraph, input_size: tuple[int, int, int] = (3, 32, 32), **kwargs):
        super().__init__(graph, input_size, **kwargs)
        self.schedule = exit_schedule(graph, input_size)

    @property
    def exit_flops(self) -> list[int]:
        return [e.flops for e in self.schedule]

    def forward(self, x: Tensor, weights: Optional[NodeWeights] = None,
                budget: Optional[float] = None) -> list[Tensor]:
        if weights is not None:
            return run_anytime(self.graph, x, weights, self.schedule, budget)
        stats = self.norm_stats() if self.track_running_stats else None
        return run_anytime(self.graph, x, self.node_weights(), self.schedule, budget, stats, self.training)

