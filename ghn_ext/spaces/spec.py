"""What a search space is to the rest of the library: one registered :class:`SearchSpace` per space.

Code above `spaces/` (the GHN, training, scoring, search, the studies, the command line) asks the
space's spec instead of branching on its name: how to draw a random architecture, the standard text
format of its architectures, the networks it builds, the recipe `ghn train` and :class:`TrainConfig`
train a GHN with, and the skeleton and signal its GHNs score in. A new space is one module that
subclasses :class:`SearchSpace` and calls :func:`register_space`.

Skeleton settings are keyword arguments shared by every space's builders (`num_nodes`, `num_blocks`,
`channels`, `cells_per_stage`, ...); a space reads those it has and ignores the others, and
:meth:`SearchSpace.skeleton` fills the ones left at None with the space's defaults.
"""
from __future__ import annotations

import random
from typing import Any, Callable, Optional

from ghn_ext.core.checks import InputError
from ghn_ext.core.graph import ArchGraph, GraphError

Sampler = Callable[[random.Random], ArchGraph]


class SearchSpace:
    """The spec of one search space; subclasses fill in the class attributes and builders."""

    name: str = ""
    summary: str = ""
    text_format: str = ""              # one line: what an architecture looks like in a file
    skeleton_defaults: dict[str, Any] = {}   # the space's networks: the settings that apply, default values
    # `ghn train` / TrainConfig(space=...) defaults where the space departs from TrainConfig's own
    train_defaults: dict[str, Any] = {}
    # GHNConfig defaults where the space departs from the paper's (kernel side, tile width, ...)
    ghn_defaults: dict[str, Any] = {}
    signal: str = "accuracy"           # what a GHN scores an architecture by: "accuracy" or "loss" (negated)
    # True: a GHN scores architectures in the skeleton it was trained in (their cell placed there); False:
    # in the space's own skeleton, architectures as given
    scores_in_training_skeleton: bool = False
    anytime: bool = False              # networks with early exits, ranked by their exits' accuracy-FLOPs curve
    truth_table: bool = False          # `ghn correlate` reads a CSV table of published accuracies
    cell_nodes: bool = False           # the cell's node count is a setting (num_nodes): the ablations vary it
    demo_skeleton: dict[str, Any] = {}  # a small network for the demo and quick checks

    # ------------------------------------------------------------------ settings
    def skeleton(self, **given: Any) -> dict[str, Any]:
        """The space's skeleton settings: those `given` (not None) over the defaults; others are dropped."""
        return {k: (given[k] if given.get(k) is not None else v) for k, v in self.skeleton_defaults.items()}

    def check_op_weights(self, op_weights: Optional[dict[str, float]]) -> Optional[dict[str, float]]:
        """Relative weights of the ops in training architectures, checked and completed; spaces without
        them refuse any."""
        if op_weights is not None:
            weighted = [s.name for s in _REGISTRY.values()
                        if type(s).check_op_weights is not SearchSpace.check_op_weights]
            raise InputError(f"op weights apply to the {' and '.join(weighted)} space only, not {self.name!r}")
        return None

    # ------------------------------------------------------------------ architectures
    def sampler(self, training: bool = False, op_weights: Optional[dict[str, float]] = None,
                **skeleton: Any) -> Sampler:
        """Draws one random architecture from a random.Random: a GHN's training architecture with
        `training`, else a candidate of a search."""
        raise NotImplementedError

    def validation_sampler(self, **skeleton: Any) -> Sampler:
        """Unseen architectures a GHN is validated on while it trains (at `skeleton`, its training one)."""
        return self.sampler(training=False, **skeleton)

    def parse_cell(self, text: str, **skeleton: Any) -> ArchGraph:
        """An architecture in the space's text format, built at `skeleton`."""
        raise GraphError(f"the {self.name!r} space has no text format of its own; give architecture-graph JSON")

    def describe(self, graph: ArchGraph) -> Any:
        """The architecture in the space's text format (JSON-able) that rankings record; None for a space
        without one (its rankings keep the graph or its hash)."""
        return None

    def from_description(self, description: Any, **skeleton: Any) -> ArchGraph:
        """The network of a recorded :meth:`describe` value at `skeleton`."""
        raise GraphError(f"architectures of the {self.name!r} space are recorded as graphs, not rebuilt")

    def label(self, graph: ArchGraph) -> str:
        """One line naming the architecture in printed output."""
        d = self.describe(graph)
        return d if isinstance(d, str) else graph.stable_hash()

    def place(self, graph: ArchGraph, **skeleton: Any) -> ArchGraph:
        """The network a GHN scores for `graph` in `skeleton` (spaces whose GHNs score in their training
        skeleton rebuild the cell there; others take the graph as given)."""
        return graph

    def counted(self, graph: ArchGraph) -> ArchGraph:
        """The network whose parameters and FLOPs (and zero-cost proxies) describe `graph`."""
        return graph

    def scoring_skeleton(self, trained: Optional[dict[str, Any]]) -> dict[str, Any]:
        """Where a GHN of this space scores, given its training settings (a TrainConfig's dict; None or
        partial for old checkpoints): its training skeleton when the space scores there, else the
        space's own."""
        if not self.scores_in_training_skeleton:
            return self.skeleton()
        trained = trained or {}
        return self.skeleton(**{k: trained.get(k) for k in self.skeleton_defaults})

    def spanning_architectures(self, **skeleton: Any) -> list[ArchGraph]:
        """One network per op with that op at every position (what a one-shot model must hold)."""
        raise InputError(f"the one-shot baseline is not defined on the {self.name!r} space")


_REGISTRY: dict[str, SearchSpace] = {}


def register_space(space: SearchSpace) -> SearchSpace:
    """Add `space` to the registry (its module calls this once, at import)."""
    if not space.name or space.name in _REGISTRY:
        raise ValueError(f"search space name {space.name!r} is empty or registered twice")
    _REGISTRY[space.name] = space
    return space


def get_space(name: str) -> SearchSpace:
    """The spec of the space `name`; InputError naming the known spaces otherwise."""
    if isinstance(name, SearchSpace):
        return name
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise InputError(f"unknown search space {name!r}; choose one of {', '.join(_REGISTRY)}") from None


def space_names() -> tuple[str, ...]:
    return tuple(_REGISTRY)


def is_registered(name: str) -> bool:
    return name in _REGISTRY


__all__ = ["SearchSpace", "Sampler", "register_space", "get_space", "space_names", "is_registered"]
