"""ghn_ext: Graph HyperNetworks for neural architecture search (Zhang, Ren & Urtasun, ICLR 2019).

What a training script needs is importable from here:

    import ghn_ext
    scores = ghn_ext.score(cells, ghn="nb201")           # rank NAS-Bench-201 cells with the shipped GHN
    ghn = ghn_ext.train("runs/mine", "nb201")            # or train one (what `ghn train --space nb201` trains)
    ghn = ghn_ext.GraphHyperNetwork.load("runs/mine/ghn.pt"); ghn.score(cells)
    ranking = ghn_ext.run_search(ghn, ghn_ext.SearchConfig(num_archs=1000), "runs/search")
    ghn_ext.get_space("nb201")                            # a search space's spec (ghn_ext.spaces)

The rest lives in its layer: ``ghn_ext.core``, ``ops``, ``nets``, ``spaces``, ``models``, ``workflows``,
``studies``, ``cli``.
"""
__version__ = "0.1.0"

# name -> module, imported on first use: ``import ghn_ext`` does not import torch, so the command line
# answers --help and --version at once
_LAZY = {"ArchGraph": "ghn_ext.core.graph", "GraphBatch": "ghn_ext.core.graph", "GraphError": "ghn_ext.core.graph",
         "Node": "ghn_ext.core.graph", "GraphHyperNetwork": "ghn_ext.models.ghn", "GHNConfig": "ghn_ext.models.ghn",
         "ScoringConfig": "ghn_ext.models.scoring", "TrainConfig": "ghn_ext.workflows.train",
         "train": "ghn_ext.workflows.train", "score": "ghn_ext.workflows.score", "load_ghn": "ghn_ext.workflows.score",
         "SearchConfig": "ghn_ext.workflows.search", "run_search": "ghn_ext.workflows.search",
         "get_space": "ghn_ext.spaces", "SPACES": "ghn_ext.spaces", "info": "ghn_ext.ops.build_info"}
_SUBPACKAGES = ("core", "ops", "nets", "spaces", "models", "workflows", "studies", "cli")


def __getattr__(name: str):
    import importlib
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    if name in _SUBPACKAGES:
        return importlib.import_module(f"ghn_ext.{name}")
    raise AttributeError(f"module 'ghn_ext' has no attribute {name!r}")


__all__ = ["__version__", *_LAZY]
