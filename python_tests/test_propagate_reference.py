"""Tests of ghn_ext.ops.propagate: the pure-PyTorch reference of GRU graph propagation.

The expected embeddings of the small cases are computed independently here, step by step in numpy:
the message MLP M (Eq. 4), the GRU update U (Eq. 3) and the two visiting orders (forward-backward,
Eq. 15, and synchronous) are written out from scratch following the module docstring.
"""
from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from ghn_ext.ops.propagate import SCHEMES, GNNParams, check_params, gru_cell, message, propagate_reference
from ghn_ext.ops.schedule import dag_schedule

D, HM = 2, 3  # embedding size and message-MLP hidden size of the hand-made cases

# ---------------------------------------------------------------------------------------------
# Hand-picked parameters (one set) and initial embeddings of 3 nodes.
SET0 = {
    "msg_w1": [[0.5, -0.4], [0.3, 0.8], [-0.6, 0.2]],            # (Hm, D)
    "msg_b1": [0.1, -0.2, 0.05],                                  # (Hm,)
    "msg_w2": [[0.7, -0.3, 0.4], [-0.5, 0.6, 0.2]],               # (D, Hm)
    "msg_b2": [0.05, -0.1],                                       # (D,)
    "gru_w_ih": [[0.2, -0.1], [0.4, 0.3], [-0.3, 0.5],            # (3D, D): rows r, z, n
                 [0.1, 0.2], [0.6, -0.4], [-0.2, 0.7]],
    "gru_w_hh": [[0.3, 0.2], [-0.4, 0.1], [0.2, -0.5],
                 [0.5, 0.3], [-0.1, 0.4], [0.3, -0.6]],
    "gru_b_ih": [0.1, -0.1, 0.2, 0.0, -0.2, 0.1],
    "gru_b_hh": [0.0, 0.1, -0.1, 0.2, 0.1, -0.3],
}
# A second, different set (for blocks that do not share parameters).
SET1 = {
    "msg_w1": [[-0.2, 0.6], [0.9, -0.1], [0.4, 0.4]],
    "msg_b1": [0.0, 0.3, -0.1],
    "msg_w2": [[0.2, 0.5, -0.6], [0.8, -0.2, 0.1]],
    "msg_b2": [-0.05, 0.2],
    "gru_w_ih": [[-0.5, 0.3], [0.1, -0.2], [0.7, 0.1],
                 [-0.3, 0.4], [0.2, 0.2], [0.5, -0.5]],
    "gru_w_hh": [[0.1, -0.3], [0.6, 0.2], [-0.2, 0.3],
                 [0.2, -0.1], [0.4, 0.5], [-0.6, 0.2]],
    "gru_b_ih": [-0.1, 0.2, 0.0, 0.1, 0.3, -0.2],
    "gru_b_hh": [0.2, -0.1, 0.1, 0.0, -0.2, 0.2],
}
H3 = [[1.0, -0.5], [0.3, 0.8], [-0.7, 0.2]]
H3_BLOCK1 = [[0.4, 0.1], [-0.2, -0.9], [0.6, 0.5]]


def np_set(s: dict) -> dict[str, np.ndarray]:
    return {k: np.array(v, dtype=np.float64) for k, v in s.items()}


def torch_params(*sets: dict, dtype=torch.float64) -> GNNParams:
    """GNNParams with one parameter set per argument (leading dimension P = len(sets))."""
    return GNNParams(*(torch.tensor(np.stack([np.array(s[name]) for s in sets]), dtype=dtype)
                       for name in GNNParams._fields))


# ---------------------------------------------------------------------------------------------
# Independent numpy implementation of M and U.
def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def M(h, p):
    """Message function: 2-layer MLP with ReLU, W2 relu(W1 h + b1) + b2."""
    hidden = np.maximum(p["msg_w1"] @ h + p["msg_b1"], 0.0)
    return p["msg_w2"] @ hidden + p["msg_b2"]


def U(m, h, p):
    """GRU update with gates r, z, n (the torch.nn.GRUCell convention)."""
    d = h.shape[0]
    wi, wh, bi, bh = p["gru_w_ih"], p["gru_w_hh"], p["gru_b_ih"], p["gru_b_hh"]
    r = sigmoid(wi[:d] @ m + bi[:d] + wh[:d] @ h + bh[:d])
    z = sigmoid(wi[d:2 * d] @ m + bi[d:2 * d] + wh[d:2 * d] @ h + bh[d:2 * d])
    n = np.tanh(wi[2 * d:] @ m + bi[2 * d:] + r * (wh[2 * d:] @ h + bh[2 * d:]))
    return (1.0 - z) * n + z * h


ZERO = np.zeros(D)


def fb_chain(h, p, T, extra=ZERO):
    """Chain 0 -> 1 -> 2, forward-backward; `extra` is added to the input node's forward message."""
    h = [np.array(x, dtype=np.float64) for x in h]
    for _ in range(T):
        # forward, topological order 0, 1, 2, messages from predecessors
        h[0] = U(ZERO + extra, h[0], p)
        h[1] = U(M(h[0], p), h[1], p)
        h[2] = U(M(h[1], p), h[2], p)
        # backward, reverse order without the last node (2): 1 then 0, messages from successors
        h[1] = U(M(h[2], p), h[1], p)
        h[0] = U(M(h[1], p), h[0], p)
    return np.stack(h)


def sync_chain(h, p, T, extra=ZERO):
    """Chain 0 -> 1 -> 2, synchronous: all nodes from predecessors, then all from successors."""
    h = [np.array(x, dtype=np.float64) for x in h]
    for _ in range(T):
        m = [ZERO + extra, M(h[0], p), M(h[1], p)]
        h = [U(m[0], h[0], p), U(m[1], h[1], p), U(m[2], h[2], p)]
        m = [M(h[1], p), M(h[2], p), ZERO]
        h = [U(m[0], h[0], p), U(m[1], h[1], p), U(m[2], h[2], p)]
    return np.stack(h)


def fb_fanin(h, p, T, extra=ZERO):
    """Fan-in 0 -> 2 <- 1, forward-backward; both 0 and 1 are input nodes."""
    h = [np.array(x, dtype=np.float64) for x in h]
    for _ in range(T):
        h[0] = U(ZERO + extra, h[0], p)
        h[1] = U(ZERO + extra, h[1], p)
        h[2] = U(M(h[0], p) + M(h[1], p), h[2], p)
        # backward: node 2 (last) skipped; 1 then 0 from their successor 2
        h[1] = U(M(h[2], p), h[1], p)
        h[0] = U(M(h[2], p), h[0], p)
    return np.stack(h)


def sync_fanin(h, p, T, extra=ZERO):
    h = [np.array(x, dtype=np.float64) for x in h]
    for _ in range(T):
        m = [ZERO + extra, ZERO + extra, M(h[0], p) + M(h[1], p)]
        h = [U(m[0], h[0], p), U(m[1], h[1], p), U(m[2], h[2], p)]
        m = [M(h[2], p), M(h[2], p), ZERO]
        h = [U(m[0], h[0], p), U(m[1], h[1], p), U(m[2], h[2], p)]
    return np.stack(h)


CASES = {  # name -> (intra-block edges of the 3-node graph, fb expectation, sync expectation)
    "chain": ([(0, 1), (1, 2)], fb_chain, sync_chain),
    "fanin": ([(0, 2), (1, 2)], fb_fanin, sync_fanin),
}


# ---------------------------------------------------------------------------------------------
# helpers
def schedule_of(edges, block_ptr):
    ei = torch.tensor(edges, dtype=torch.long).reshape(-1, 2).t().contiguous()
    return dag_schedule(ei, torch.tensor(block_ptr, dtype=torch.long))


def run(h0, edges, block_ptr, graph_block_ptr, params, T, scheme, pass_embedding=True):
    if not isinstance(h0, torch.Tensor):
        h0 = torch.tensor(np.asarray(h0, dtype=np.float64))
    h0 = h0.to(params.msg_w1.dtype)
    return propagate_reference(h0, torch.tensor(block_ptr), torch.tensor(graph_block_ptr),
                               schedule_of(edges, block_ptr), params, T, scheme, pass_embedding)


# ---------------------------------------------------------------------------------------------
# one block, hand-computed
@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("T", [1, 2])
@pytest.mark.parametrize("scheme", SCHEMES)
def test_single_block_matches_hand_computation(case, T, scheme):
    edges, fb, sync = CASES[case]
    expected = (fb if scheme == "fb" else sync)(H3, np_set(SET0), T)
    got = run(H3, edges, [0, 3], [0, 1], torch_params(SET0), T, scheme)
    np.testing.assert_allclose(got.numpy(), expected, rtol=0, atol=1e-12)
    assert not np.allclose(expected, np.array(H3))  # the nodes really moved


def test_schemes_differ_and_T_matters():
    edges = CASES["chain"][0]
    p = torch_params(SET0)
    fb1, fb2 = (run(H3, edges, [0, 3], [0, 1], p, T, "fb") for T in (1, 2))
    sy1 = run(H3, edges, [0, 3], [0, 1], p, 1, "sync")
    assert not torch.allclose(fb1, fb2)
    assert not torch.allclose(fb1, sy1)


def test_fb_follows_topological_order_not_node_ids():
    # chain 2 -> 0 -> 1: the topological order is 2, 0, 1; relabel the hand-computed chain
    perm = [2, 0, 1]  # chain position k is node perm[k]
    h_nodes = [None] * 3
    for k, v in enumerate(perm):
        h_nodes[v] = H3[k]
    got = run(h_nodes, [(2, 0), (0, 1)], [0, 3], [0, 1], torch_params(SET0), 2, "fb")
    expected = fb_chain(H3, np_set(SET0), 2)
    np.testing.assert_allclose(got.numpy()[perm], expected, rtol=0, atol=1e-12)


def test_single_node_block_gets_one_update_per_pass():
    p = np_set(SET0)
    h = np.array([[0.3, -0.6]])
    expected = U(ZERO, U(ZERO, h[0], p), p)  # fb: one forward step, no backward step (2|V|-1 = 1)
    got = run(h, [], [0, 1], [0, 1], torch_params(SET0), 2, "fb")
    np.testing.assert_allclose(got.numpy()[0], expected, rtol=0, atol=1e-12)


# ---------------------------------------------------------------------------------------------
# stacked blocks
STACK_EDGES = [(0, 1), (1, 2), (3, 5), (4, 5)]  # block 0: chain 0..2, block 1: fan-in 3, 4 -> 5
STACK_PTR = [0, 3, 6]


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("T", [1, 2])
@pytest.mark.parametrize("shared", [True, False])
@pytest.mark.parametrize("pass_embedding", [True, False])
def test_stacked_blocks_match_hand_computation(scheme, T, shared, pass_embedding):
    p0, p1 = np_set(SET0), np_set(SET1)
    chain = fb_chain if scheme == "fb" else sync_chain
    fanin = fb_fanin if scheme == "fb" else sync_fanin
    block0 = chain(H3, p0, T)
    emb = block0.mean(axis=0) if pass_embedding else ZERO  # Eq. 13: mean embedding of block 0
    block1 = fanin(H3_BLOCK1, p0 if shared else p1, T, extra=emb)
    expected = np.concatenate([block0, block1])

    params = torch_params(SET0) if shared else torch_params(SET0, SET1)
    # an edge between the blocks (2 -> 3) is not propagated over: only the embedding crosses
    got = run(H3 + H3_BLOCK1, STACK_EDGES, STACK_PTR, [0, 2], params, T, scheme, pass_embedding)
    np.testing.assert_allclose(got.numpy(), expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_pass_embedding_only_changes_later_blocks(scheme):
    params = torch_params(SET0, SET1)
    on = run(H3 + H3_BLOCK1, STACK_EDGES, STACK_PTR, [0, 2], params, 2, scheme, True)
    off = run(H3 + H3_BLOCK1, STACK_EDGES, STACK_PTR, [0, 2], params, 2, scheme, False)
    torch.testing.assert_close(on[:3], off[:3], rtol=0, atol=0)
    assert (on[3:] - off[3:]).abs().max() > 1e-3
    # without the embedding, block 1 is the same as propagating it on its own with set 1
    alone = run(H3_BLOCK1, [(0, 2), (1, 2)], [0, 3], [0, 1], torch_params(SET1), 2, scheme)
    torch.testing.assert_close(off[3:], alone, rtol=0, atol=1e-12)


def test_no_sharing_uses_the_block_index_parameter_set():
    # three blocks, three parameter sets: changing set 2 changes only block 2; set 0 only block 0..2
    rng = np.random.default_rng(0)
    third = {k: (np.array(v) + rng.normal(0, 0.3, np.array(v).shape)).tolist() for k, v in SET1.items()}
    edges = STACK_EDGES + [(6, 7)]
    h0 = H3 + H3_BLOCK1 + [[0.1, 0.2], [-0.3, 0.4]]
    base = run(h0, edges, STACK_PTR + [8], [0, 3], torch_params(SET0, SET1, third), 1, "fb")
    moved = run(h0, edges, STACK_PTR + [8], [0, 3], torch_params(SET0, SET1, SET0), 1, "fb")
    torch.testing.assert_close(base[:6], moved[:6], rtol=0, atol=0)
    assert (base[6:] - moved[6:]).abs().max() > 1e-3
    # shared parameters (P = 1) equal P sets that are all the same
    shared = run(h0, edges, STACK_PTR + [8], [0, 3], torch_params(SET0), 1, "fb")
    same = run(h0, edges, STACK_PTR + [8], [0, 3], torch_params(SET0, SET0, SET0), 1, "fb")
    torch.testing.assert_close(shared, same, rtol=0, atol=0)


# ---------------------------------------------------------------------------------------------
# the GRU cell and the message function against torch / numpy
def random_params(P: int, d: int, hm: int, seed: int = 0, dtype=torch.float64) -> GNNParams:
    g = torch.Generator().manual_seed(seed)
    shapes = [(hm, d), (hm,), (d, hm), (d,), (3 * d, d), (3 * d, d), (3 * d,), (3 * d,)]
    return GNNParams(*(torch.randn(P, *s, generator=g, dtype=dtype) * 0.5 for s in shapes))


def test_gru_cell_matches_torch_grucell():
    d = 5
    p = random_params(1, d, 7, seed=1, dtype=torch.float32).at(0)
    cell = torch.nn.GRUCell(d, d)
    with torch.no_grad():
        cell.weight_ih.copy_(p.gru_w_ih)
        cell.weight_hh.copy_(p.gru_w_hh)
        cell.bias_ih.copy_(p.gru_b_ih)
        cell.bias_hh.copy_(p.gru_b_hh)
    m, h = torch.randn(4, d), torch.randn(4, d)
    torch.testing.assert_close(gru_cell(m, h, p), cell(m, h), rtol=1e-5, atol=1e-6)


def test_gru_and_message_match_numpy():
    p = torch_params(SET0).at(0)
    npp = np_set(SET0)
    h = torch.tensor(H3, dtype=torch.float64)
    m = torch.tensor(H3_BLOCK1, dtype=torch.float64)
    np.testing.assert_allclose(message(h, p).numpy(), np.stack([M(x, npp) for x in np.array(H3)]),
                               rtol=0, atol=1e-13)
    np.testing.assert_allclose(gru_cell(m, h, p).numpy(),
                               np.stack([U(a, b, npp) for a, b in zip(np.array(H3_BLOCK1), np.array(H3))]),
                               rtol=0, atol=1e-13)


# ---------------------------------------------------------------------------------------------
# lockstep batching of unequal graphs is exact
def random_graph(rng: random.Random, block_sizes: list[int]):
    """Local edges (random DAG inside each block, shuffled node ids) and block offsets."""
    edges, ptr = [], [0]
    for size in block_sizes:
        start = ptr[-1]
        perm = list(range(size))
        rng.shuffle(perm)
        for u in range(size):
            for v in range(u + 1, size):
                if rng.random() < 0.5:
                    edges.append((start + perm[u], start + perm[v]))
        ptr.append(start + size)
    return edges, ptr


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("P", [1, 3])
@pytest.mark.parametrize("pass_embedding", [True, False])
def test_batch_of_unequal_graphs_equals_each_alone(scheme, P, pass_embedding):
    rng = random.Random(7)
    shapes = [[3, 5, 2], [4], [6, 1], [1, 2, 7]]
    graphs = [random_graph(rng, s) for s in shapes]
    d = 4
    params = random_params(P, d, 6, seed=3)
    g = torch.Generator().manual_seed(5)
    h0s = [torch.randn(ptr[-1], d, generator=g, dtype=torch.float64) for _, ptr in graphs]

    alone = [run(h0, e, ptr, [0, len(ptr) - 1], params, 2, scheme, pass_embedding)
             for (e, ptr), h0 in zip(graphs, h0s)]

    edges, block_ptr, gbp, off = [], [0], [0], 0
    for e, ptr in graphs:
        edges += [(u + off, v + off) for u, v in e]
        block_ptr += [off + x for x in ptr[1:]]
        gbp.append(len(block_ptr) - 1)
        off += ptr[-1]
    batched = run(torch.cat(h0s), edges, block_ptr, gbp, params, 2, scheme, pass_embedding)
    torch.testing.assert_close(batched, torch.cat(alone), rtol=0, atol=1e-12)


# ---------------------------------------------------------------------------------------------
# gradients
@pytest.mark.parametrize("scheme", SCHEMES)
def test_gradients_reach_every_parameter(scheme):
    params = GNNParams(*(t.clone().float().requires_grad_() for t in random_params(2, 4, 6, seed=11)))
    edges = STACK_EDGES
    h0 = torch.randn(6, 4, generator=torch.Generator().manual_seed(2)).requires_grad_()
    out = propagate_reference(h0, torch.tensor(STACK_PTR), torch.tensor([0, 2]),
                              schedule_of(edges, STACK_PTR), params, 2, scheme, True)
    (out * torch.randn_like(out)).sum().backward()
    assert h0.grad is not None and h0.grad.abs().min() > 0
    for name, t in zip(GNNParams._fields, params):
        assert t.grad is not None, name
        for p in range(2):  # both blocks' parameter sets
            assert t.grad[p].abs().sum() > 0, f"{name}[{p}] got no gradient"


@pytest.mark.parametrize("scheme", SCHEMES)
def test_gradcheck_float64(scheme):
    params = random_params(2, 2, 3, seed=4)
    sched = schedule_of(STACK_EDGES, STACK_PTR)
    bp, gbp = torch.tensor(STACK_PTR), torch.tensor([0, 2])
    h0 = torch.randn(6, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(9))

    def f(h, *ps):
        return propagate_reference(h, bp, gbp, sched, GNNParams(*ps), 1, scheme, True)

    inputs = (h0.requires_grad_(),) + tuple(t.clone().requires_grad_() for t in params)
    assert torch.autograd.gradcheck(f, inputs, eps=1e-6, atol=1e-6)


# ---------------------------------------------------------------------------------------------
# bad input
def test_unknown_scheme():
    with pytest.raises(ValueError, match="unknown propagation scheme 'bfs'"):
        run(H3, [(0, 1)], [0, 3], [0, 1], torch_params(SET0), 1, "bfs")


@pytest.mark.parametrize("T", [0, -1])
def test_T_must_be_positive(T):
    with pytest.raises(ValueError, match="T must be at least 1"):
        run(H3, [(0, 1)], [0, 3], [0, 1], torch_params(SET0), T, "fb")


def test_too_few_parameter_sets():
    with pytest.raises(ValueError, match="2 parameter sets for graphs of 3 blocks"):
        run(H3 + H3_BLOCK1 + [[0.0, 0.0]], STACK_EDGES, STACK_PTR + [7], [0, 3],
            torch_params(SET0, SET1), 1, "fb")


def test_check_params_accepts_good_shapes():
    p = random_params(3, 4, 6)
    checked = check_params(tuple(p))
    assert isinstance(checked, GNNParams) and checked.msg_w1.shape == (3, 6, 4)


@pytest.mark.parametrize("field,shape", [
    ("msg_b1", (1, 5)),          # wrong hidden size
    ("msg_w2", (1, 4, 5)),
    ("msg_b2", (1, 3)),
    ("gru_w_ih", (1, 8, 4)),     # 2D rows instead of 3D
    ("gru_w_hh", (1, 12, 3)),
    ("gru_b_ih", (12,)),         # missing the P dimension
    ("gru_b_hh", (2, 12)),       # P differs from msg_w1's
])
def test_check_params_rejects_wrong_shapes(field, shape):
    p = random_params(1, 4, 6)._asdict()
    p[field] = torch.zeros(shape, dtype=torch.float64)
    with pytest.raises(ValueError, match=f"GNN parameter {field} has shape"):
        check_params(tuple(p.values()))


def test_integer_h0_is_refused_naming_it():
    """Issue 29 probes: an int64 h0 reached torch.matmul and failed with 'expected m1 and m2 to have the
    same dtype', naming neither h0 nor the op."""
    edges, ptr = torch.tensor([[0], [1]]), torch.tensor([0, 2])
    with pytest.raises(TypeError, match="propagate: h0 must be floating point, got torch.int64"):
        propagate_reference(torch.zeros(2, 4, dtype=torch.long), ptr, torch.tensor([0, 1]),
                            dag_schedule(edges, ptr, 2), random_params(1, 4, 5), 1)
