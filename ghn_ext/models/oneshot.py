"""The one-shot weight-sharing baseline of the correlation benchmark (paper Table 4; Pham et al. 2018,
Bender et al. 2018).

One set of parameters per (block, node position, op, weight name) of the space's networks: every
architecture of the space is a path through this over-parameterised model and reads its weights as
slices of those tensors (a node with fewer input channels than the largest takes the first ones).
A weight that reads a cell's concatenated leaves (the next cells' bottlenecks, the classifier) takes
the input columns of those leaves' positions instead, as in ENAS: leaf j of a cell always meets the
same columns, whichever other nodes are leaves (the first columns would give each of them, step
after step, whatever the leaves happen to be, and the shared weights would learn nothing).
Trained like the GHN (``ghn train --model oneshot``: a random architecture per step, here at the
evaluation size N=17), it then scores architectures by accuracy with the shared weights. It has the
GHN's call interface: ``model(arch)`` gives ``{node: {name: tensor}}``, ``model(list)`` a list.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Optional

import torch
import torch.nn as nn

from ghn_ext.core.checkpoints import CheckpointError, load_checkpoint
from ghn_ext.core.graph import ArchGraph, as_graph_list
from ghn_ext.core.files import atomic_save
from ghn_ext.nets.network import param_shapes
from ghn_ext.spaces import classification
from ghn_ext.spaces.spec import get_space
from ghn_ext.core.checks import InputError

CHECKPOINT_FORMAT = "ghn_ext.oneshot/1"


@dataclass(frozen=True)
class OneShotConfig:
    space: str = "classification"
    num_nodes: int = classification.EVAL_NODES  # nodes per cell (classification)
    num_blocks: int = 4
    channels: int = 8
    cells_per_stage: int = 1                     # NAS-Bench-201 skeleton
    input_size: tuple[int, int, int] = (3, 32, 32)

    def __post_init__(self):
        object.__setattr__(self, "input_size", tuple(self.input_size))


def spanning_architectures(config: OneShotConfig) -> list[ArchGraph]:
    """Networks that together hold every (block, position, op) of the space at its largest shape: one
    per op, with that op at every position (the space's spec builds them)."""
    return get_space(config.space).spanning_architectures(
        num_nodes=config.num_nodes, num_blocks=config.num_blocks, channels=config.channels,
        cells_per_stage=config.cells_per_stage)


CELL_INPUTS = 2  # a classification block starts with its two input bottlenecks, then the cell's nodes


def concat_columns(graph: ArchGraph) -> dict[int, torch.Tensor]:
    """For every node that reads a concatenation of a cell's leaves, the input columns of its weights
    in the shared tensor (that of the spanning networks, whose cells have every node a leaf)."""
    preds = graph.predecessors()
    start = {u: s for s, e in graph.block_ranges() for u in range(s, e)}
    out = {}
    for v, inputs in enumerate(preds):
        if len(inputs) != 1 or graph.nodes[inputs[0]].op != "concat":
            continue
        columns = []
        for leaf in preds[inputs[0]]:  # in concatenation order
            width = graph.nodes[leaf].channels
            first = (leaf - start[leaf] - CELL_INPUTS) * width
            columns.append(torch.arange(first, first + width))
        out[v] = torch.cat(columns)
    return out


def weight_keys(graph: ArchGraph, input_size: tuple[int, int, int]) -> dict[tuple[int, str], tuple[str, tuple]]:
    """(node, weight name) -> (shared-parameter key, shape) for every free weight of `graph`."""
    start = {}
    for s, e in graph.block_ranges():
        for v in range(s, e):
            start[v] = s
    out = {}
    for v, params in param_shapes(graph, input_size).items():
        node = graph.nodes[v]
        for name, shape in params.items():
            out[v, name] = (f"b{node.block}_p{v - start[v]}_{node.op}_{name}", tuple(shape))
    return out


class OneShotModel(nn.Module):
    def __init__(self, config: OneShotConfig = OneShotConfig()):
        super().__init__()
        self.config = config
        largest: dict[str, tuple] = {}
        for g in spanning_architectures(config):
            for key, shape in weight_keys(g, config.input_size).values():
                old = largest.get(key, shape)
                if len(old) != len(shape):
                    raise InputError(f"weight {key} has shapes {old} and {shape} of different ranks")
                largest[key] = tuple(max(a, b) for a, b in zip(old, shape))
        self.shared = nn.ParameterDict({k: nn.Parameter(self._init(s)) for k, s in sorted(largest.items())})

    @staticmethod
    def _init(shape: tuple) -> torch.Tensor:
        if len(shape) == 1:  # biases
            return torch.zeros(shape)
        return torch.randn(shape) * math.sqrt(2.0 / math.prod(shape[1:]))  # He initialisation

    def weights_of(self, graph: ArchGraph) -> dict[int, dict[str, torch.Tensor]]:
        if graph.space != self.config.space:
            raise InputError(f"this one-shot model is for the {self.config.space!r} space, "
                             f"got a {graph.space!r} architecture")
        out: dict[int, dict[str, torch.Tensor]] = {}
        reads_concat = concat_columns(graph)
        for (v, name), (key, shape) in weight_keys(graph, self.config.input_size).items():
            if key not in self.shared:
                raise InputError(f"node {v} ({graph.nodes[v].op}) of block {graph.nodes[v].block} has no shared "
                                 f"weight {key}: the architecture is outside the one-shot model's "
                                 f"skeleton {asdict(self.config)}")
            full = self.shared[key]
            columns = reads_concat.get(v) if len(shape) > 1 else None
            if columns is not None:
                if len(columns) != shape[1] or int(columns.max()) >= full.shape[1]:
                    raise InputError(f"weight {key} of shape {shape} reads concatenated leaves the shared "
                                     f"{tuple(full.shape)} does not hold")
                full = full.index_select(1, columns.to(full.device))
            if any(s > f for s, f in zip(shape, full.shape)):
                raise InputError(f"weight {key} of shape {shape} exceeds the shared {tuple(full.shape)}")
            out.setdefault(v, {})[name] = full[tuple(slice(0, s) for s in shape)]
        return out

    def forward(self, arch_or_list: ArchGraph | list[ArchGraph]):
        graphs = as_graph_list(arch_or_list)
        weights = [self.weights_of(g) for g in graphs]
        return weights[0] if isinstance(arch_or_list, ArchGraph) else weights

    def save(self, path: str | Path, extra: Optional[dict[str, Any]] = None) -> None:
        atomic_save({"format": CHECKPOINT_FORMAT, "config": asdict(self.config),
                     "state_dict": self.state_dict(), **(extra or {})}, path)

    @classmethod
    def load(cls, path: str | Path, map_location="cpu") -> "OneShotModel":
        ckpt = load_checkpoint(path, CHECKPOINT_FORMAT, map_location)
        try:
            config = OneShotConfig(**{f.name: ckpt["config"][f.name] for f in fields(OneShotConfig)
                                      if f.name in ckpt["config"]})
            model = cls(config)
            model.load_state_dict(ckpt["state_dict"])
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise CheckpointError(f"checkpoint {path} does not hold a valid one-shot model: {exc}") from exc
        return model


__all__ = ["OneShotConfig", "OneShotModel", "spanning_architectures", "weight_keys"]
