"""How `ghn search` scales with processes: the same search launched by torchrun on 1 and on 2 processes
(gloo, one thread each), wall-clock from launch to the ranking on disk, startup included.

The search: a GHN of the reduced protocol's shape (4 cells, 8 channels, block_channels 16, untrained:
scoring costs the same), `--num-archs` N=17 architectures scored on 500 validation images. The speed-up
of 2 processes over 1 is printed at the end of the run; each torchrun starts Python and reads CIFAR-10
once per process, a fixed cost the ratio includes.

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

from ghn_ext.ghn import GHNConfig, GraphHyperNetwork

REPO = Path(__file__).resolve().parents[1]
DATA_DIR = os.environ.get("GHN_DATA_DIR") or str(REPO.parent / "shared/data/cifar10")
NUM_ARCHS = 32
SECONDS: dict[int, float] = {}


@pytest.fixture(scope="module")
def ghn_file(tmp_path_factory):
    if not (Path(DATA_DIR) / "cifar10.npz").is_file():
        pytest.skip(f"CIFAR-10 not found at {DATA_DIR} (set GHN_DATA_DIR)")
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ghn") / "ghn.pt"
    GraphHyperNetwork(GHNConfig(space="classification", block_channels=16)).save(path)
    return path


@pytest.mark.parametrize("nproc", [1, 2])
def test_search_processes(benchmark, ghn_file, tmp_path, nproc, figures):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    runs = iter(range(10))

    def search():
        out = tmp_path / f"run{next(runs)}"  # a fresh folder: nothing to resume
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               "-m", "ghn_ext.cli", "search", "--ckpt", str(ghn_file), "--out", str(out), "--num-archs",
               str(NUM_ARCHS), "--num-nodes", "17", "--num-blocks", "4", "--channels", "8", "--val-images", "500",
               "--data-dir", DATA_DIR, "--quiet"]
        subprocess.run(cmd, cwd=REPO, env=env, check=True, capture_output=True)

    benchmark.pedantic(search, rounds=2, iterations=1)
    SECONDS[nproc] = benchmark.stats.stats.mean
    if nproc == 2:
        figures(lambda: f"search of {NUM_ARCHS} architectures: 1 process {SECONDS[1]:.1f} s, 2 processes "
                        f"{SECONDS[2]:.1f} s, speed-up {SECONDS[1] / SECONDS[2]:.2f}x" if 1 in SECONDS else None)
