"""GRU graph propagation over a batch of stacked-block graphs: the pure-PyTorch reference.

This is the specification the compiled propagation op follows and the fallback without it.

Per block (paper Sec. 4.3), in block order, with T passes inside each block:
  * message of node v from neighbours u: m_v = sum_u M(h_u), M a 2-layer MLP (Eq. 4);
  * update h_v <- GRU(m_v, h_v) (Eq. 3);
  * forward-backward scheme (Eq. 15): nodes one at a time in topological order with messages from
    their predecessors, then in reverse order (the last node skipped: 2|V|-1 steps) with messages
    from their successors, as backpropagation visits them;
  * synchronous scheme: all nodes at once from their predecessors, then all at once from their
    successors, so one pass sends messages both ways, like one forward-backward pass;
  * the mean embedding of block i (Eq. 13) is added to the message of block i+1's input nodes (those
    without predecessors inside the block) during its forward updates; block 0 receives nothing.
Graphs of a batch are independent and advance in lockstep: the k-th update of every graph's block is
one batched step. GNN parameters carry a leading dimension P: 1 when blocks share them, else one set
per block index.
"""
from __future__ import annotations

from typing import NamedTuple, Sequence

import torch
from torch import Tensor

from ghn_ext.ops.schedule import Schedule

SCHEMES = ("fb", "sync")


class GNNParams(NamedTuple):
    msg_w1: Tensor   # (P, Hm, D)
    msg_b1: Tensor   # (P, Hm)
    msg_w2: Tensor   # (P, D, Hm)
    msg_b2: Tensor   # (P, D)
    gru_w_ih: Tensor  # (P, 3D, D)   gate order r, z, n as in torch.nn.GRUCell
    gru_w_hh: Tensor  # (P, 3D, D)
    gru_b_ih: Tensor  # (P, 3D)
    gru_b_hh: Tensor  # (P, 3D)

    def at(self, p: int) -> "GNNParams":
        return GNNParams(*(t[p] for t in self))


def message(h: Tensor, p: GNNParams) -> Tensor:
    return torch.relu(h @ p.msg_w1.t() + p.msg_b1) @ p.msg_w2.t() + p.msg_b2


def gru_cell(m: Tensor, h: Tensor, p: GNNParams) -> Tensor:
    gi = m @ p.gru_w_ih.t() + p.gru_b_ih
    gh = h @ p.gru_w_hh.t() + p.gru_b_hh
    i_r, i_z, i_n = gi.chunk(3, dim=1)
    h_r, h_z, h_n = gh.chunk(3, dim=1)
    r, z = torch.sigmoid(i_r + h_r), torch.sigmoid(i_z + h_z)
    n = torch.tanh(i_n + r * h_n)
    return (1 - z) * n + z * h


def _update(h: Tensor, nodes: list[int], neighbours: list[list[int]], extra: Tensor | None,
            p: GNNParams) -> Tensor:
    """One synchronous update of `nodes` from `neighbours` (+ `extra` message rows, or None)."""
    idx = torch.tensor(nodes, dtype=torch.long, device=h.device)
    src = [u for nb in neighbours for u in nb]
    m = h.new_zeros(len(nodes), h.shape[1])
    if src:
        seg = torch.tensor([i for i, nb in enumerate(neighbours) for _ in nb], device=h.device)
        m = m.index_add(0, seg, message(h[torch.tensor(src, device=h.device)], p))
    if extra is not None:
        m = m + extra
    return h.index_copy(0, idx, gru_cell(m, h[idx], p))


def propagate_reference(h0: Tensor, block_ptr: Tensor, graph_block_ptr: Tensor, schedule: Schedule,
                        params: GNNParams, T: int, scheme: str = "fb", pass_embedding: bool = True
                        ) -> Tensor:
    """Final embeddings (N, D) of every node, from initial embeddings `h0` (N, D).

    `schedule` is `dag_schedule` of the intra-block edges with `block_ptr` as the node pointer (each
    block one DAG); `graph_block_ptr` (B+1,) says which blocks belong to which graph.
    """
    if scheme not in SCHEMES:
        raise ValueError(f"unknown propagation scheme {scheme!r}; choose one of {SCHEMES}")
    if T < 1:
        raise ValueError(f"T must be at least 1, got {T}")
    if not h0.is_floating_point():
        raise TypeError(f"propagate: h0 must be floating point, got {h0.dtype}")
    starts, gbp = block_ptr.tolist(), graph_block_ptr.tolist()
    if len(gbp) < 2:
        raise ValueError("propagate: empty batch (graph_block_ptr describes no graph)")
    order = schedule.order.tolist()
    in_ptr, in_src = schedule.in_ptr.tolist(), schedule.in_src.tolist()
    out_ptr, out_dst = schedule.out_ptr.tolist(), schedule.out_dst.tolist()
    preds = lambda v: in_src[in_ptr[v]:in_ptr[v + 1]]  # noqa: E731
    succs = lambda v: out_dst[out_ptr[v]:out_ptr[v + 1]]  # noqa: E731
    num_graphs, num_params = len(gbp) - 1, params.msg_w1.shape[0]
    max_blocks = max(gbp[g + 1] - gbp[g] for g in range(num_graphs))
    if num_params != 1 and num_params < max_blocks:
        raise ValueError(f"{num_params} parameter sets for graphs of {max_blocks} blocks")

    h = h0
    graph_emb = h0.new_zeros(num_graphs, h0.shape[1])
    for b in range(max_blocks):
        p = params.at(min(b, num_params - 1))
        active = [g for g in range(num_graphs) if gbp[g] + b < gbp[g + 1]]
        seqs = [order[starts[gbp[g] + b]:starts[gbp[g] + b + 1]] for g in active]
        slot = {v: i for i, s in enumerate(seqs) for v in s}
        emb = graph_emb[active] if pass_embedding and b > 0 else None

        def forward_step(h: Tensor, nodes: list[int]) -> Tensor:
            extra = None
            if emb is not None:
                is_input = torch.tensor([[float(not preds(v))] for v in nodes], dtype=h.dtype, device=h.device)
                extra = emb[[slot[v] for v in nodes]] * is_input
            return _update(h, nodes, [preds(v) for v in nodes], extra, p)

        for _ in range(T):
            if scheme == "fb":
                for k in range(max(map(len, seqs))):
                    h = forward_step(h, [s[k] for s in seqs if k < len(s)])
                for k in range(max(map(len, seqs)) - 1):
                    nodes = [s[len(s) - 2 - k] for s in seqs if k < len(s) - 1]
                    h = _update(h, nodes, [succs(v) for v in nodes], None, p)
            else:
                every = [v for s in seqs for v in s]
                h = forward_step(h, every)
                h = _update(h, every, [succs(v) for v in every], None, p)
        means = torch.stack([h[torch.tensor(s, device=h.device)].mean(0) for s in seqs])
        graph_emb = graph_emb.index_copy(0, torch.tensor(active, device=h.device), means)
    return h


def check_params(params: Sequence[Tensor]) -> GNNParams:
    params = GNNParams(*params)
    P, Hm, D = params.msg_w1.shape
    expected = GNNParams((P, Hm, D), (P, Hm), (P, D, Hm), (P, D), (P, 3 * D, D), (P, 3 * D, D),
                         (P, 3 * D), (P, 3 * D))
    for name, t, shape in zip(GNNParams._fields, params, expected):
        if tuple(t.shape) != shape:
            raise ValueError(f"GNN parameter {name} has shape {tuple(t.shape)}, expected {shape}")
    return params


# ---------------------------------------------------------------------------------------------
# the compiled op

from ghn_ext.ops._extension import HAS_EXTENSION, has_kernel, use_extension  # noqa: E402

_KERNEL_DTYPES = (torch.float32, torch.float64)


def propagate(h0: Tensor, block_ptr: Tensor, graph_block_ptr: Tensor, schedule: Schedule,
              params: GNNParams, T: int, scheme: str = "fb", pass_embedding: bool = True) -> Tensor:
    """Final embeddings (N, D); same arguments and result as :func:`propagate_reference`.

    Calls the compiled ``torch.ops.ghn_ext.propagate`` (differentiable with respect to ``h0`` and the
    parameters, once) when the extension is built, not disabled by ``GHN_EXT_REFERENCE`` and has a
    kernel for ``h0``'s device and dtype (float32, float64); otherwise :func:`propagate_reference`.
    """
    if scheme not in SCHEMES:
        raise ValueError(f"unknown propagation scheme {scheme!r}; choose one of {SCHEMES}")
    if T < 1:
        raise ValueError(f"T must be at least 1, got {T}")
    if (
        isinstance(h0, Tensor)
        and h0.dtype in _KERNEL_DTYPES
        and use_extension()
        and has_kernel("propagate", h0.device)
    ):
        # the op wants every tensor on h0's device; the reference (and so this wrapper) also takes
        # index tensors elsewhere, e.g. a GraphBatch's CPU tensors with a GHN on CUDA
        index = [t.to(h0.device) for t in (block_ptr, graph_block_ptr, schedule.order, schedule.in_ptr,
                                           schedule.in_src, schedule.out_ptr, schedule.out_dst)]
        h, _ = torch.ops.ghn_ext.propagate.default(
            h0, *index, *params, int(T), scheme == "fb", bool(pass_embedding))
        return h
    return propagate_reference(h0, block_ptr, graph_block_ptr, schedule, GNNParams(*params), T, scheme,
                               pass_embedding)


if HAS_EXTENSION:

    _PROPAGATE_TENSOR_NAMES = ("block_ptr", "graph_block_ptr", "order", "in_ptr", "in_src", "out_ptr", "out_dst",
                                "msg_w1", "msg_b1", "msg_w2", "msg_b2", "gru_w_ih", "gru_w_hh", "gru_b_ih",
                                "gru_b_hh")

    @torch.library.register_fake("ghn_ext::propagate")
    def _propagate_fake(h0, block_ptr, graph_block_ptr, order, in_ptr, in_src, out_ptr, out_dst,
                        msg_w1, msg_b1, msg_w2, msg_b2, gru_w_ih, gru_w_hh, gru_b_ih, gru_b_hh, T,
                        forward_backward, pass_embedding):
        torch._check(h0.dim() == 2, lambda: f"propagate: h0 must have shape (N, D), got {tuple(h0.shape)}")
        torch._check(T >= 1, lambda: f"propagate: T must be at least 1, got {T}")
        # reached for meta tensors: one meta index beside real tensors would otherwise return garbage
        for name, t in zip(_PROPAGATE_TENSOR_NAMES, (block_ptr, graph_block_ptr, order, in_ptr, in_src, out_ptr,
                                                     out_dst, msg_w1, msg_b1, msg_w2, msg_b2, gru_w_ih,
                                                     gru_w_hh, gru_b_ih, gru_b_hh)):
            if t.device != h0.device:
                raise ValueError(f"propagate: {name} is on {t.device} but h0 is on {h0.device}")
        if 2 * T * h0.shape[0] * max(1, h0.shape[1]) * h0.element_size() >= 2 ** 63:
            raise ValueError(f"propagate: T = {T} passes over {h0.shape[0]} nodes would need a buffer of "
                             "2*T*N*D values, more bytes than an int64 can count")
        return h0.new_empty(h0.shape), h0.new_empty((2 * T * h0.shape[0], h0.shape[1]))

    @torch.library.register_fake("ghn_ext::_propagate_backward")
    def _propagate_backward_fake(grad, h, saved, block_ptr, graph_block_ptr, order, in_ptr, in_src,
                                 out_ptr, out_dst, *rest):
        params = rest[:8]
        return [grad.new_empty(h.shape)] + [p.new_empty(p.shape) for p in params]

    def _propagate_setup_context(ctx, inputs, output):
        h, saved = output
        ctx.save_for_backward(h, saved, *inputs[1:16])
        ctx.flags = tuple(inputs[16:19])

    def _propagate_backward(ctx, grad_h, grad_saved):
        h, saved, *rest = ctx.saved_tensors
        if grad_h is None:
            grad_h = torch.zeros_like(h)
        grads = torch.ops.ghn_ext._propagate_backward.default(grad_h, h, saved, *rest, *ctx.flags)
        out = [grads[0]] + [None] * 7 + list(grads[1:]) + [None, None, None]
        return tuple(g if ctx.needs_input_grad[i] else None for i, g in enumerate(out))

    torch.library.register_autograd("ghn_ext::propagate", _propagate_backward,
                                    setup_context=_propagate_setup_context)
