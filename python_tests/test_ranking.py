"""Ranking measures and their bootstrap intervals (ghn_ext.core.rank_measures), the NAS-Bench-201 truth table reader
(ghn_ext.studies.truth_table) and the zero-cost proxies (ghn_ext.nets.proxies)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from ghn_ext.core.graph import ArchGraph, Node
from ghn_ext.nets.proxies import naswot, synflow
from ghn_ext.core.rank_measures import MEASURES, bootstrap_intervals, ranking_measures, top_recall
from ghn_ext.spaces import nb201
from ghn_ext.studies.truth_table import TruthTableError, read_truth_table


# ----------------------------------------------------------------------------- ranking measures
def test_measures_of_a_perfect_and_a_reversed_ranking():
    true = np.arange(40, dtype=float)
    perfect = ranking_measures(true * 2 + 1, true)
    assert all(perfect[m] == pytest.approx(1.0) for m in MEASURES)
    reversed_ = ranking_measures(-true, true)
    assert reversed_["spearman"] == pytest.approx(-1) and reversed_["kendall"] == pytest.approx(-1)
    assert reversed_["top10_recall"] == 0.0


def test_measures_agree_with_scipy_and_the_top_half_is_above_the_mean():
    rng = np.random.default_rng(0)
    true = rng.normal(size=60)
    pred = true + rng.normal(size=60)
    m = ranking_measures(pred, true)
    assert m["spearman"] == pytest.approx(stats.spearmanr(pred, true)[0])
    assert m["kendall"] == pytest.approx(stats.kendalltau(pred, true)[0])
    top = true > true.mean()
    assert m["spearman_top"] == pytest.approx(stats.spearmanr(pred[top], true[top])[0])
    assert m["pearson_top"] == pytest.approx(stats.pearsonr(pred[top], true[top])[0])


def test_top_recall_counts_the_shared_best_tenth():
    true = np.arange(20, dtype=float)        # best two: 18, 19
    pred = np.zeros(20)
    pred[[19, 3]] = [5, 4]                   # finds one of them
    assert top_recall(pred, true) == 0.5


def test_constant_predictor_has_undefined_correlations():
    m = ranking_measures(np.ones(10), np.arange(10.0))
    assert math.isnan(m["spearman"]) and math.isnan(m["pearson"])


@pytest.mark.parametrize("pred,true,match", [([1, 2], [1, 2], "at least 3"), ([1, 2, 3], [1, 2], "one predicted"),
                                             ([1, float("nan"), 3], [1, 2, 3], "finite")])
def test_bad_measure_input_is_refused(pred, true, match):
    with pytest.raises(ValueError, match=match):
        ranking_measures(pred, true)


def test_bootstrap_interval_holds_the_estimate_and_narrows_with_more_cells():
    rng = np.random.default_rng(1)

    def width(n):
        true = rng.normal(size=n)
        pred = true + rng.normal(size=n)
        ci = bootstrap_intervals(pred, true, resamples=200)
        rho = ranking_measures(pred, true)["spearman"]
        assert ci["spearman"][0] <= rho <= ci["spearman"][1]
        return ci["spearman"][1] - ci["spearman"][0]

    assert width(400) < width(40) / 2


# ----------------------------------------------------------------------------- truth table
def write(tmp_path, text, name="t.csv"):
    path = tmp_path / name
    path.write_text(text)
    return path


CELL_A = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"
CELL_B = "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|"


def test_table_reads_cells_and_columns(tmp_path):
    t = read_truth_table(write(tmp_path, f"arch,acc,other\n{CELL_A},93.5,1\n{CELL_B},10.0,2\n"))
    assert t.archs == [CELL_A, CELL_B]
    assert t.column("acc").tolist() == [93.5, 10.0]
    assert t.head(1).archs == [CELL_A]
    with pytest.raises(TruthTableError, match="no column 'cifar' ; it has acc, other".replace(" ;", ";")):
        t.column("cifar")


@pytest.mark.parametrize("text,match", [
    ("acc\n1\n", "'arch' column"),
    ("arch\n" + CELL_A + "\n", "no accuracy column"),
    (f"arch,acc\n{CELL_A},93\n{CELL_A},94\n", ":3: cell .* is listed twice"),
    (f"arch,acc\n{CELL_A},high\n", ":2: an accuracy is not a number"),
    (f"arch,acc\n{CELL_A},inf\n", ":2: an accuracy is not finite"),
    ("arch,acc\n|conv~0|+|none~0|none~1|+|none~0|none~1|none~2|,3\n", ":2: .*unknown op 'conv'"),
    (f"arch,acc\n{CELL_A},1,2\n", ":2: 3 fields, the header has 2"),
    ("arch,acc\n", "lists no cells"),
])
def test_malformed_tables_are_refused_with_the_line(tmp_path, text, match):
    with pytest.raises(TruthTableError, match=match):
        read_truth_table(write(tmp_path, text))


def test_missing_and_binary_tables_are_refused(tmp_path):
    with pytest.raises(TruthTableError, match="does not exist"):
        read_truth_table(tmp_path / "nope.csv")
    path = tmp_path / "bin.csv"
    path.write_bytes(b"\xff\xfe\x00\x81" * 10)
    with pytest.raises(TruthTableError, match="not a readable CSV"):
        read_truth_table(path)


def test_the_shared_development_table_reads(shared_nb201_table):
    t = read_truth_table(shared_nb201_table)
    assert len(t.archs) == 1000
    assert {"cifar10_test_200ep", "cifar100_test_200ep", "imagenet16_test_200ep", "cifar10_val_12ep"} <= set(t.columns)


# ----------------------------------------------------------------------------- proxies
def chain(*ops, channels=4):
    """input -> stem -> ops ... -> classifier, a tiny network for the proxies."""
    nodes = [Node("input", 0, 3), Node("stem_conv", 0, channels)] + [Node(op, 1, channels) for op in ops]
    nodes.append(Node("classifier", 2, 10))
    return ArchGraph(nodes, [(i, i + 1) for i in range(len(nodes) - 1)]).validate()


def test_synflow_of_a_linear_network_equals_its_closed_form():
    """input -> stem conv (3x3, padding 1) -> classifier on a ones image, BatchNorm removed: the logits
    are linear in each weight, so sum w dR/dw = 2 R (the stem's and the classifier's weights each
    contribute R; the zero bias contributes nothing)."""
    graph = chain()
    score = synflow(graph, input_size=(3, 4, 4))
    torch.manual_seed(0)
    from ghn_ext.nets.network import ArchNetwork
    w = {v: {n: p.detach().abs().double() for n, p in q.items()}
         for v, q in ArchNetwork(graph, (3, 4, 4), track_running_stats=False).node_weights().items()}
    x = torch.ones(1, 3, 4, 4, dtype=torch.float64)
    feat = torch.nn.functional.conv2d(x, w[1]["weight"], padding=1) / math.sqrt(1 + 1e-5)
    r = (feat.mean(dim=(2, 3)) @ w[2]["weight"].t() + w[2]["bias"]).sum()
    assert score == pytest.approx(math.log1p(2 * float(r)), rel=1e-9)


def test_synflow_is_lowest_for_a_cell_that_cuts_its_input_off():
    dead = synflow(nb201.network(CELL_B, channels=4, cells_per_stage=1))
    alive = synflow(nb201.network(CELL_A, channels=4, cells_per_stage=1))
    assert dead < alive and math.isfinite(dead)


def test_naswot_kernel_counts_agreeing_relu_units():
    """Images that share every code (copies of one image) make K rank one: their score is finite and
    below that of distinct images."""
    graph = chain("conv1x1")
    x = torch.randn(3, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    score = naswot(graph, x)
    assert math.isfinite(score)
    same = naswot(graph, x[:1].expand(3, -1, -1, -1).contiguous())
    assert same < score


def test_naswot_ranks_a_dead_cell_below_a_live_one():
    x = torch.randn(16, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    dead = naswot(nb201.network(CELL_B, channels=4, cells_per_stage=1), x)
    alive = naswot(nb201.network(CELL_A, channels=4, cells_per_stage=1), x)
    assert dead < alive


def test_naswot_needs_a_batch():
    with pytest.raises(ValueError, match="at least 2 images"):
        naswot(chain(), torch.randn(1, 3, 4, 4))


def test_proxies_are_deterministic_for_a_seed():
    g = nb201.network(CELL_A, channels=4, cells_per_stage=1)
    assert synflow(g, seed=3) == synflow(g, seed=3) != synflow(g, seed=4)
