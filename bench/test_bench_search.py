"""The whole search, timed: architectures per second of `run_search` with adaptive evaluation (the
default) against full evaluation of every candidate on every image, in the same run, for both spaces
with their shipped GHNs; where the time goes (sampling, GHN forward, network evaluation, the rest);
and the FLOP rate the evaluation reaches against torch running the same convolutions on their own.

Sizes are scaled down to fit a benchmark (27 candidates, 900 images, first round 100, at least 3
finalists; the paper space's networks at 4 cells of 17 nodes, 8 channels: the shipped GHN's training
networks), so the adaptive/full ratio here is below that of the default 1,000 candidates on 5,000
images (bench/RESULTS.md gives both, the latter measured with `ghn search`).

Run: python -m pytest bench/test_bench_search.py --benchmark-columns=mean,rounds
"""
from __future__ import annotations

import os
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from torch.overrides import TorchFunctionMode

from ghn_ext.core.data import cifar10_splits
from ghn_ext.models.ghn import GraphHyperNetwork
from ghn_ext.nets.network import run_network
from ghn_ext.workflows.search import SearchConfig, for_ghn, run_search, search_architectures
from ghn_ext.core.timing import Stopwatch

DATA_DIR = os.environ.get("GHN_DATA_DIR") or str(Path(__file__).resolve().parents[2] / "shared/data/cifar10")
# the skeleton each space's candidates are drawn in: nb201's shipped GHN's own (its scoring settings), the
# classification GHN's training networks (4 cells at 8 channels, not the paper's 18 at 32)
SPACES = {"nb201": {}, "classification": dict(num_blocks=4, channels=8)}
SECONDS: dict[tuple[str, str], float] = {}
WATCHES: dict[tuple[str, str], dict] = {}


@pytest.fixture(scope="module", autouse=True)
def data():
    if not (Path(DATA_DIR) / "cifar10.npz").is_file():
        pytest.skip(f"CIFAR-10 not found at {DATA_DIR} (set GHN_DATA_DIR)")


def config(space: str, mode: str) -> SearchConfig:
    cfg = SearchConfig(num_archs=27, val_images=900, min_images=100, eta=3, min_final=3, data_dir=DATA_DIR,
                       **SPACES[space])  # the signal, and settings left out, are the GHN's
    return cfg if mode == "adaptive" else replace(cfg, min_images=0)


def summary(space: str):
    if (space, "full") not in SECONDS or (space, "adaptive") not in SECONDS:
        return None
    full, adaptive = SECONDS[space, "full"], SECONDS[space, "adaptive"]
    t = WATCHES[space, "adaptive"]
    shares = ", ".join(f"{k} {t[k] / t['total']:.0%}" for k in ("data", "sample", "ghn", "evaluate", "rank", "other")
                       if k in t)
    return (f"search {space}: adaptive {27 / adaptive:.2f} archs/s, full {27 / full:.2f} archs/s "
            f"({full / adaptive:.2f}x); adaptive time: {shares}")


@pytest.mark.parametrize("mode", ["full", "adaptive"])
@pytest.mark.parametrize("space", ["nb201", "classification"])
def test_search(benchmark, figures, tmp_path_factory, space, mode):
    ghn = GraphHyperNetwork.pretrained(space)
    cfg = config(space, mode)

    def run():  # a fresh folder each round: nothing resumed
        watch = Stopwatch()
        run_search(ghn, cfg, tmp_path_factory.mktemp("search"), progress=False, watch=watch)
        WATCHES[space, mode] = watch.report()

    benchmark.group = f"search {space}: 27 candidates, 900 images"
    benchmark.pedantic(run, rounds=2, iterations=1, warmup_rounds=0)
    SECONDS[space, mode] = benchmark.stats.stats.mean
    if mode == "adaptive":  # the second of the pair: one line per space
        figures(lambda: summary(space))


class ConvRecorder(TorchFunctionMode):
    """The arguments of every conv2d a forward pass makes."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.conv2d or func is torch.nn.functional.conv2d:
            self.calls.append((args, kwargs))
        return func(*args, **kwargs)


@pytest.mark.parametrize("space", ["nb201", "classification"])
def test_evaluation_flop_rate(figures, space):
    """FLOPs per second of network evaluation with generated weights (100-image batches, batch
    statistics), and of torch running only the same convolutions on the same shapes: their ratio is how
    much of the arithmetic rate the rest of the network (BatchNorm, pooling, ReLU, Python) costs."""
    ghn = GraphHyperNetwork.pretrained(space).eval()
    archs = search_architectures(for_ghn(replace(config(space, "full"), num_archs=4), ghn), space)
    x = cifar10_splits(DATA_DIR).val.head(100).prepared().images
    with torch.no_grad():
        weights = ghn(archs)
    recorder = ConvRecorder()
    with torch.inference_mode():
        with recorder:
            for g, w in zip(archs, weights):
                run_network(g, x, w)
        # a convolution's FLOPs: 2 per multiply-add, one weight slice (cin/groups x kh x kw) per output
        conv_flops = sum(2 * torch.conv2d(*a, **k).numel() * a[1][0].numel() for a, k in recorder.calls)
        seconds = {}
        for name, fn in (("network", lambda: [run_network(g, x, w) for g, w in zip(archs, weights)]),
                         ("convolutions", lambda: [torch.conv2d(*a, **k) for a, k in recorder.calls])):
            fn()  # warm-up
            start = time.perf_counter()
            for _ in range(3):
                fn()
            seconds[name] = (time.perf_counter() - start) / 3
    # the same arithmetic both ways: the convolutions' FLOPs (count_flops adds the classifier's)
    network_rate, conv_rate = conv_flops / seconds["network"], conv_flops / seconds["convolutions"]
    figures(f"evaluation {space} ({torch.get_num_threads()} threads): network {network_rate / 1e9:.1f} GFLOP/s, "
            f"its convolutions alone {conv_rate / 1e9:.1f} GFLOP/s ({network_rate / conv_rate:.0%})")
    assert network_rate > 0 and conv_rate > 0
