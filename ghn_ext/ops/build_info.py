"""What this installation runs: the version, torch, which compiled kernels loaded (CPU, CUDA), the CPU
worker the propagation kernel picks, and whether the pure-PyTorch fallback is in use
(``ghn_ext.info()``, ``ghn info``)."""
from __future__ import annotations

import os
import platform
from typing import Any

import torch

from ghn_ext.ops._extension import HAS_EXTENSION, IMPORT_ERROR, has_kernel, reference_forced

OPS = ("dag_schedule", "propagate", "emit_weights", "emit_edge_weights")


def _cpu_worker() -> str:
    # mirrors csrc/cpu/propagate_cpu.cpp: use_avx2_worker() (AVX2 and FMA present, GHN_EXT_CPU_GENERIC unset)
    if platform.machine() not in ("x86_64", "AMD64"):
        return "portable"
    try:
        flags = next((line.split(":", 1)[1].split() for line in open("/proc/cpuinfo") if line.startswith("flags")), [])
    except OSError:
        return "unknown (no /proc/cpuinfo)"
    if os.environ.get("GHN_EXT_CPU_GENERIC", "0") not in ("", "0"):
        return "portable (SSE2), as GHN_EXT_CPU_GENERIC asks"
    return "AVX2+FMA" if {"avx2", "fma"} <= set(flags) else "portable (SSE2): this CPU lacks AVX2 or FMA"


def build_info() -> dict[str, Any]:
    from ghn_ext import __version__
    kernels = {op: [dev for dev in ("cpu", "cuda") if has_kernel(op, dev)] for op in OPS}
    return {"ghn_ext": __version__, "torch": torch.__version__, "torch_cuda": torch.version.cuda,
            "cuda_available": torch.cuda.is_available(), "extension_loaded": HAS_EXTENSION,
            "extension_error": None if HAS_EXTENSION else str(IMPORT_ERROR), "kernels": kernels,
            "cpu_worker": _cpu_worker() if HAS_EXTENSION else None,
            "fallback": ("forced by GHN_EXT_REFERENCE" if reference_forced()
                         else "active: the extension did not load" if not HAS_EXTENSION else "not in use")}


def info() -> str:
    """A few lines a bug report can quote: what is installed and which kernels run."""
    b = build_info()
    lines = [f"ghn_ext {b['ghn_ext']}, torch {b['torch']}"
             + (f" (CUDA {b['torch_cuda']}, {'a GPU is' if b['cuda_available'] else 'no GPU'} visible)"
                if b["torch_cuda"] else " (CPU build)")]
    if b["extension_loaded"]:
        backends = sorted({dev for devs in b["kernels"].values() for dev in devs})
        lines.append(f"compiled kernels: {', '.join(backends).upper()} ("
                     + ", ".join(f"{op}: {'+'.join(d) or 'none'}" for op, d in b["kernels"].items()) + ")")
        lines.append(f"CPU propagation worker: {b['cpu_worker']}")
    else:
        lines.append(f"compiled kernels: none ({b['extension_error']})")
    lines.append(f"pure-PyTorch fallback: {b['fallback']}")
    return "\n".join(lines)
