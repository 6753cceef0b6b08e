"""Build script for the compiled part of ghn_ext (the extension module ``ghn_ext._C``).

Project metadata lives in pyproject.toml; this file only declares the extension.

    pip install -r requirements.txt
    pip install --no-build-isolation .        # or: pip install --no-build-isolation -e .

``--no-build-isolation`` makes the build use the torch already installed, so the extension is
compiled against exactly the torch it will run with.

Environment:
    GHN_EXT_CUDA=auto|0|1   auto (default): compile csrc/cuda/*.cu when torch has CUDA
                            (torch.version.cuda) and a CUDA toolkit is found (CUDA_HOME or nvcc on
                            PATH); 0: CPU only; 1: CUDA required, fail if impossible.
    CUDA_HOME               toolkit location, e.g. /usr/local/cuda
    TORCH_CUDA_ARCH_LIST    GPU architectures to compile for, e.g. "9.0" (H100) for short builds
    MAX_JOBS                parallel compile jobs for ninja
    GHN_EXT_DEBUG=1         -O0 -g instead of -O3
"""
import glob
import os
import sys

from setuptools import find_packages, setup

try:
    import torch
    from torch.utils.cpp_extension import (
        CUDA_HOME,
        BuildExtension,
        CppExtension,
        CUDAExtension,
    )
except ImportError as exc:  # pragma: no cover - explained to the user
    raise SystemExit(
        "ghn_ext: building the extension needs torch installed first. Run\n"
        "    pip install -r requirements.txt\n"
        "    pip install --no-build-isolation .\n"
        f"(import error: {exc})"
    )

HERE = os.path.dirname(os.path.abspath(__file__))


def _rel(paths):
    return sorted(os.path.relpath(p, HERE) for p in paths)


def _want_cuda():
    mode = os.environ.get("GHN_EXT_CUDA", "auto").strip().lower()
    if mode not in ("auto", "0", "1"):
        raise SystemExit(f"ghn_ext: GHN_EXT_CUDA must be auto, 0 or 1, got {mode!r}")
    if mode == "0":
        return False
    problems = []
    if torch.version.cuda is None:
        problems.append(f"the installed torch {torch.__version__} is built without CUDA")
    if CUDA_HOME is None:
        problems.append("no CUDA toolkit found (set CUDA_HOME, e.g. CUDA_HOME=/usr/local/cuda)")
    else:
        # torch guesses CUDA_HOME from the first `nvcc` on PATH when the variable is unset; a wrapper
        # script (e.g. /usr/local/bin/nvcc) then yields a directory that is no toolkit.
        for part in (os.path.join("bin", "nvcc"), os.path.join("include", "cuda_runtime.h")):
            if not os.path.isfile(os.path.join(CUDA_HOME, part)):
                problems.append(
                    f"the CUDA toolkit guessed at {CUDA_HOME} has no {part} "
                    "(set CUDA_HOME, e.g. CUDA_HOME=/usr/local/cuda)"
                )
    if mode == "1" and problems:
        raise SystemExit("ghn_ext: GHN_EXT_CUDA=1 but CUDA cannot be built: " + "; ".join(problems))
    if problems:
        print("ghn_ext: building CPU-only (" + "; ".join(problems) + ")", file=sys.stderr)
        return False
    return True


def _extensions():
    with_cuda = _want_cuda()
    debug = os.environ.get("GHN_EXT_DEBUG", "0") == "1"
    opt = ["-O0", "-g"] if debug else ["-O3"]

    # csrc/*.cpp holds the schemas and the Python module stub; csrc/cpu/*.cpp the CPU kernels.
    sources = _rel(glob.glob(os.path.join(HERE, "csrc", "*.cpp")))
    sources += _rel(glob.glob(os.path.join(HERE, "csrc", "cpu", "*.cpp")))
    cxx_args = list(opt)
    link_args = []
    if sys.platform.startswith("linux"):
        # at::parallel_for uses OpenMP (ATen's inline parallel backend) when compiled with it.
        cxx_args.append("-fopenmp")
        link_args.append("-fopenmp")
    define_macros = []
    extra_compile_args = {"cxx": cxx_args}

    if with_cuda:
        sources += _rel(glob.glob(os.path.join(HERE, "csrc", "cuda", "*.cu")))
        define_macros.append(("GHN_EXT_WITH_CUDA", None))
        extra_compile_args["nvcc"] = list(opt) + ["-lineinfo"]
        ext_cls = CUDAExtension
        print(
            f"ghn_ext: building with CUDA (toolkit {CUDA_HOME}, torch CUDA {torch.version.cuda}, "
            f"TORCH_CUDA_ARCH_LIST={os.environ.get('TORCH_CUDA_ARCH_LIST', '<auto>')})",
            file=sys.stderr,
        )
    else:
        ext_cls = CppExtension

    return [
        ext_cls(
            name="ghn_ext._C",
            sources=sources,
            include_dirs=[os.path.join(HERE, "csrc")],
            define_macros=define_macros,
            extra_compile_args=extra_compile_args,
            extra_link_args=link_args,
        )
    ]


setup(
    packages=find_packages(include=["ghn_ext", "ghn_ext.*"]),
    # the pretrained GHNs (ghn_ext.workflows.pretrained) travel inside the package
    package_data={"ghn_ext": ["checkpoints/*.pt", "checkpoints/manifest.json"]},
    ext_modules=_extensions(),
    cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True)},
    zip_safe=False,
)
