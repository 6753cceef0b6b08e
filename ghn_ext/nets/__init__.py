"""Networks built from architecture graphs, run on supplied weights or as nn.Modules."""
from ghn_ext.nets.anytime import AnytimeNetwork, Exit, exit_schedule, exits_within, run_anytime
from ghn_ext.nets.network import (ArchNetwork, Network, NodeShape, count_flops, count_params, infer_shapes, node_flops,
                      param_shapes, run_network, summary)
from ghn_ext.core.primitives import OP_INDEX, OP_NAMES, PRIMITIVES

__all__ = ["AnytimeNetwork", "ArchNetwork", "Exit", "Network", "NodeShape", "count_flops", "count_params",
           "exit_schedule", "exits_within", "infer_shapes", "node_flops", "param_shapes", "run_anytime",
           "run_network", "summary", "OP_INDEX", "OP_NAMES", "PRIMITIVES"]
