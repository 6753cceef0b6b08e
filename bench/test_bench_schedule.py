"""dag_schedule: compiled CPU kernel against the Python reference on the paper's graph sizes.

Run: python -m pytest bench/test_bench_schedule.py --benchmark-group-by=param --benchmark-columns=mean,stddev,rounds
"""
from __future__ import annotations

import random

import pytest
import torch

from ghn_ext.core.graph import GraphBatch
from ghn_ext.ops.schedule import dag_schedule_reference
from ghn_ext.spaces import classification


def paper_batch(num_graphs: int) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Intra-block edges of `num_graphs` evaluation networks (18 cells of 17 nodes), each block a DAG."""
    rng = random.Random(0)
    graphs = [classification.sample_architecture(rng, 17, 18, 32) for _ in range(num_graphs)]
    batch = GraphBatch.from_graphs(graphs)
    return batch.edge_index[:, batch.block_edge_mask], batch.block_ptr, batch.num_nodes


@pytest.mark.parametrize("num_graphs", [1, 64])
@pytest.mark.parametrize("impl", ["kernel", "reference"])
def test_dag_schedule(benchmark, impl, num_graphs):
    edge_index, block_ptr, n = paper_batch(num_graphs)
    kernel = torch.ops.ghn_ext.dag_schedule
    expected = dag_schedule_reference(edge_index, block_ptr, n)
    got = kernel(edge_index, block_ptr, n)
    assert all(torch.equal(a, b) for a, b in zip(expected, got))  # agree before timing
    fn = kernel if impl == "kernel" else dag_schedule_reference
    benchmark.group = f"dag_schedule, {num_graphs} graph(s)"
    benchmark(fn, edge_index, block_ptr, n)
