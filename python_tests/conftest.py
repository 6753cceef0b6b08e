"""Shared pytest configuration for python_tests/."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

FALLBACK_DATA_DIR = Path(__file__).resolve().parents[2] / "shared/data/cifar10"


@pytest.fixture(scope="session")
def data_dir():
    """CIFAR-10 folder: $GHN_DATA_DIR (then a missing file fails) or ../shared beside the repo."""
    env = os.environ.get("GHN_DATA_DIR")
    if env:  # explicitly configured (CI): a missing file is a failure, not a skip
        assert (Path(env) / "cifar10.npz").is_file(), f"GHN_DATA_DIR={env} has no cifar10.npz"
        return str(env)
    if not (FALLBACK_DATA_DIR / "cifar10.npz").is_file():
        pytest.skip(f"CIFAR-10 not found (set GHN_DATA_DIR or place it at {FALLBACK_DATA_DIR})")
    return str(FALLBACK_DATA_DIR)


@pytest.fixture(scope="session")
def shared_nb201_table():
    """The NAS-Bench-201 development table in ../shared; a CI checkout always has it beside the repo."""
    path = FALLBACK_DATA_DIR.parent / "nb201" / "dev_1000.csv"
    if not path.is_file():
        if os.environ.get("CI"):
            pytest.fail(f"{path} is missing")
        pytest.skip(f"the NAS-Bench-201 development table is not at {path}")
    return path


def pytest_report_header(config):
    """Say which ghn_ext is under test and whether its compiled extension loaded.

    `python -m pytest` from the repository root imports the source tree's ghn_ext/ (not an
    installed copy), which has the compiled ops only after an in-place or editable build.
    """
    try:
        import ghn_ext
        from ghn_ext.ops import _extension as ext
    except Exception as exc:  # keep the header from hiding the real import error in the tests
        return f"ghn_ext: import failed: {exc!r}"
    if ext.HAS_EXTENSION:
        import torch

        backends = [k for k in ("CPU", "CUDA")
                    if torch._C._dispatch_has_kernel_for_dispatch_key("ghn_ext::dag_schedule", k)]
        status = f"compiled extension {ext._C.__file__} (kernels: {', '.join(backends)})"
    else:
        status = f"NO compiled extension ({ext.IMPORT_ERROR}); pure-PyTorch references only"
    forced = " [GHN_EXT_REFERENCE set: references forced]" if ext.reference_forced() else ""
    return f"ghn_ext: {ghn_ext.__file__}; {status}{forced}"
