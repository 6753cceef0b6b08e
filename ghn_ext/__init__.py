"""ghn_ext: Graph HyperNetworks for neural architecture search (Zhang, Ren & Urtasun, ICLR 2019)."""
from ghn_ext.core.graph import ArchGraph, GraphBatch, GraphError, Node

__version__ = "0.1.0"
__all__ = ["ArchGraph", "GraphBatch", "GraphError", "Node", "__version__"]
