"""Builds the CUDA kernels' host emulations (README.md here) for the python_tests/test_*_cuda_emulated.py
tests, and the skip mark for machines without the extension or a toolchain to build them."""
from __future__ import annotations

import os
import shutil

import pytest

import ghn_ext.ops._extension as ext
from ghn_ext.ops import HAS_EXTENSION

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))


def needs_emulation(op: str) -> list:
    """Skip marks: the CPU kernel of `op` to compare with, a C++ compiler and ninja to build with."""
    return [pytest.mark.skipif(not (HAS_EXTENSION and ext.has_kernel(op, "cpu")),
                               reason=f"compiled extension ghn_ext._C not built ({ext.IMPORT_ERROR})"),
            pytest.mark.skipif(shutil.which("c++") is None or shutil.which("ninja") is None,
                               reason="needs a C++ compiler and ninja to build the emulation")]


def load_emulation(name: str, source: str, extra_sources: tuple[str, ...] = ()):
    """Compile (once, into build/<name>/) and import the emulation `source` of this folder, with
    `extra_sources` (paths relative to the repository) linked in."""
    from torch.utils import cpp_extension

    build = os.path.join(REPO, "build", name)
    os.makedirs(build, exist_ok=True)
    return cpp_extension.load(
        name=name, sources=[os.path.join(HERE, source)] + [os.path.join(REPO, s) for s in extra_sources],
        extra_include_paths=[os.path.join(REPO, "csrc")], extra_cflags=["-O1", "-std=c++20", "-pthread"],
        extra_ldflags=["-pthread"], build_directory=build)
