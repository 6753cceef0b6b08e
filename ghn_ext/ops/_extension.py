"""Loading the compiled library ``ghn_ext._C`` and choosing between it and the references.

Importing ``ghn_ext._C`` loads the shared library; its static initialisers register the operator
schemas (``TORCH_LIBRARY(ghn_ext, ...)``) and the per-backend kernels with PyTorch's dispatcher,
after which they are reachable as ``torch.ops.ghn_ext.<op>``. The package works without it: every
op has a pure-PyTorch reference in ``ghn_ext/ops`` that the wrappers fall back to.

Environment:
    GHN_EXT_REFERENCE=1   use the pure-PyTorch references even when the library is built
                          (read at every call, so tests can flip it).
"""
from __future__ import annotations

import os
import warnings

import torch  # noqa: F401  (libtorch must be loaded before the extension library)

try:
    from ghn_ext import _C  # noqa: F401

    HAS_EXTENSION: bool = True
    IMPORT_ERROR: Exception | None = None
except (ImportError, OSError) as exc:  # not built, or built against another torch
    _C = None
    HAS_EXTENSION = False
    IMPORT_ERROR = exc

_warned = False

__all__ = ["HAS_EXTENSION", "IMPORT_ERROR", "reference_forced", "use_extension", "has_kernel"]


def reference_forced() -> bool:
    """True when ``GHN_EXT_REFERENCE`` asks for the pure-PyTorch references."""
    return os.environ.get("GHN_EXT_REFERENCE", "0").strip().lower() not in ("", "0", "false", "no")


def _warn_missing() -> None:
    global _warned
    if _warned:
        return
    _warned = True
    warnings.warn(
        "ghn_ext: the compiled extension ghn_ext._C is not built or failed to load "
        f"({IMPORT_ERROR}); falling back to the pure-PyTorch reference ops, which are much slower. "
        "Build it with `pip install --no-build-isolation .` (or `-e .`), or set "
        "GHN_EXT_REFERENCE=1 to choose the reference explicitly and silence this warning.",
        RuntimeWarning,
        stacklevel=4,  # the caller of the public op wrapper
    )


def use_extension() -> bool:
    """Whether the ops should call the compiled kernels (``torch.ops.ghn_ext.*``).

    False when ``GHN_EXT_REFERENCE=1`` or when the library is missing; in the latter case a
    RuntimeWarning is issued once per process.
    """
    if reference_forced():
        return False
    if not HAS_EXTENSION:
        _warn_missing()
        return False
    return True


def has_kernel(op: str, device: torch.device | str) -> bool:
    """Whether the compiled op ``ghn_ext::<op>`` has a kernel for ``device``'s backend.

    E.g. a CPU-only build has no CUDA kernels; the wrappers then use the reference for CUDA
    tensors instead of failing.
    """
    if not HAS_EXTENSION:
        return False
    key = {"cpu": "CPU", "cuda": "CUDA"}.get(torch.device(device).type)
    if key is None:
        return False
    return torch._C._dispatch_has_kernel_for_dispatch_key(f"ghn_ext::{op}", key)
