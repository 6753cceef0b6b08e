"""How `ghn search` scales with processes: the same search launched by torchrun on 1 and on 2 processes
(gloo, one thread each), wall-clock from launch to the ranking on disk, startup included.

The search: a GHN of the reduced protocol's shape (4 cells, 8 channels, tile_channels 16, untrained:
scoring costs the same), 32 or 96 N=17 architectures scored on 500 validation images. The speed-ups of
2 processes over 1 are printed at the end of the run; each torchrun starts Python and reads CIFAR-10
once per process, a fixed cost the ratios include (so they grow with the search).

Run on an otherwise idle machine (two cores here):
    python -m pytest bench/test_bench_distributed.py --benchmark-columns=mean,rounds
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ghn_ext.models.ghn import GHNConfig, GraphHyperNetwork

REPO = Path(__file__).resolve().parents[1]
DATA_DIR = os.environ.get("GHN_DATA_DIR") or str(REPO.parent / "shared/data/cifar10")
SECONDS: dict[tuple[int, int], float] = {}


@pytest.fixture(scope="module")
def ghn_file(tmp_path_factory):
    if not (Path(DATA_DIR) / "cifar10.npz").is_file():
        pytest.skip(f"CIFAR-10 not found at {DATA_DIR} (set GHN_DATA_DIR)")
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ghn") / "ghn.pt"
    GraphHyperNetwork(GHNConfig(space="classification", tile_channels=16)).save(path)
    return path


@pytest.mark.parametrize("num_archs", [32, 96])
@pytest.mark.parametrize("nproc", [1, 2])
def test_search_processes(benchmark, ghn_file, tmp_path, nproc, num_archs, figures):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    runs = iter(range(10))

    def search():
        out = tmp_path / f"run{next(runs)}"  # a fresh folder: nothing to resume
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               "-m", "ghn_ext.cli", "search", "--ckpt", str(ghn_file), "--out", str(out), "--num-archs",
               str(num_archs), "--num-nodes", "17", "--num-blocks", "4", "--channels", "8", "--val-images", "500",
               "--data-dir", DATA_DIR, "--quiet"]
        subprocess.run(cmd, cwd=REPO, env=env, check=True, capture_output=True)

    benchmark.pedantic(search, rounds=2, iterations=1)
    SECONDS[nproc, num_archs] = benchmark.stats.stats.mean
    if nproc == 2:
        def line(n=num_archs):
            one, two = SECONDS.get((1, n)), SECONDS.get((2, n))
            return one and f"search of {n} architectures: 1 process {one:.1f} s, 2 processes {two:.1f} s, " \
                           f"speed-up {one / two:.2f}x"
        figures(line)
