"""Networks built from architecture graphs, run on supplied weights or as nn.Modules."""
from .network import (ArchNetwork, Network, NodeShape, count_flops, count_params, infer_shapes, param_shapes,
                      run_network, summary)
from ..primitives import OP_INDEX, OP_NAMES, PRIMITIVES

__all__ = ["ArchNetwork", "Network", "NodeShape", "count_flops", "count_params", "infer_shapes", "param_shapes",
           "run_network", "summary", "OP_INDEX", "OP_NAMES", "PRIMITIVES"]
