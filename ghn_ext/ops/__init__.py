"""Compiled operators of ghn_ext with their pure-PyTorch references.

Each op has a thin wrapper that dispatches to ``torch.ops.ghn_ext.<op>`` (C++/CUDA kernels in
``csrc/``) when the extension ``ghn_ext._C`` is built, and to its reference otherwise (or when
``GHN_EXT_REFERENCE=1``). The package imports fine without the compiled library.
"""
from ghn_ext.ops._extension import HAS_EXTENSION, reference_forced, use_extension
from ghn_ext.ops.emit import emit_edge_weights, emit_edges_reference, emit_reference, emit_weights
from ghn_ext.ops.propagate import propagate, propagate_reference
from ghn_ext.ops.schedule import Schedule, dag_schedule, dag_schedule_reference

__all__ = [
    "HAS_EXTENSION",
    "Schedule",
    "dag_schedule",
    "dag_schedule_reference",
    "emit_edge_weights",
    "emit_edges_reference",
    "emit_reference",
    "emit_weights",
    "propagate",
    "propagate_reference",
    "reference_forced",
    "use_extension",
]
