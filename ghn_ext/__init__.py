"""ghn_ext: Graph HyperNetworks for neural architecture search (Zhang, Ren & Urtasun, ICLR 2019).

The names most scripts need are importable from here; the rest from their layer (see the README's
Layout): ``ghn_ext.core``, ``ops``, ``nets``, ``spaces``, ``models``, ``workflows``, ``studies``, ``cli``.
"""
__version__ = "0.1.0"

# name -> module, imported on first use: ``import ghn_ext`` does not import torch, so the command line
# answers --help and --version at once
_LAZY = {"ArchGraph": "ghn_ext.core.graph", "GraphBatch": "ghn_ext.core.graph", "GraphError": "ghn_ext.core.graph",
         "Node": "ghn_ext.core.graph", "GraphHyperNetwork": "ghn_ext.models.ghn", "GHNConfig": "ghn_ext.models.ghn",
         "TrainConfig": "ghn_ext.workflows.train", "SearchConfig": "ghn_ext.workflows.search",
         "run_search": "ghn_ext.workflows.search", "info": "ghn_ext.ops.build_info"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'ghn_ext' has no attribute {name!r}")


__all__ = ["__version__", *_LAZY]
