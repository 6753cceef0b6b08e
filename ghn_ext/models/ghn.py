"""The Graph HyperNetwork (paper Sec. 4): node embeddings -> GRU graph propagation -> shared MLP that
emits every free weight of the architecture.

    ghn = GraphHyperNetwork(GHNConfig(space="classification"))
    scores = ghn.score(archs)               # validation score of each architecture (higher is better)
    weights = ghn(arch)                     # {node: {name: tensor}}, differentiable
    logits = Network(arch)(images, weights)
    model = ghn.materialize(arch)           # an nn.Module holding the generated weights

Anytime space (appendix 7.2): a scaled node's bottleneck reads the concatenation of its inputs, so its
size follows the node's number of inputs. With `edge_bottlenecks` the GHN emits it edge by edge: a
second MLP turns each incoming edge's [parent, child] embeddings into a 1x1 block, and the edges'
pieces are laid side by side along the bottleneck's input channels.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Optional, Sequence

import torch
import torch.nn as nn
from torch import Tensor

from ghn_ext.core.checks import InputError, require_int
from ghn_ext.core.graph import ArchGraph, GraphBatch, Node, as_graph_list
from ghn_ext.core.checkpoints import CheckpointError, load_checkpoint
from ghn_ext.core.files import atomic_save, with_checksum
from ghn_ext.nets.anytime import AnytimeNetwork
from ghn_ext.nets.network import ArchNetwork, infer_shapes, param_shapes
from ghn_ext.ops.emit import emit_edge_weights, emit_weights
from ghn_ext.ops.propagate import GNNParams, SCHEMES, propagate
from ghn_ext.ops.schedule import dag_schedule
from ghn_ext.core.primitives import OP_INDEX, OP_NAMES, PRIMITIVES
from ghn_ext.models.formats import GHN_FORMAT
from ghn_ext.models.pretrained import pretrained_path
from ghn_ext.models.scoring import ScoringConfig, score
from ghn_ext.spaces.spec import get_space, is_registered

CHECKPOINT_FORMAT = GHN_FORMAT
MAX_PASSES = 1000  # propagation passes T: the paper uses 5; more only grows a buffer of 2*T*N rows
_STRIDES, _SCALES = (1, 2, 4), (0, 32, 16, 8)
NUM_FEATURES = len(OP_NAMES) + len(_STRIDES) + len(_SCALES) + 1
# The op vocabulary of checkpoints that do not record theirs: everything before "norm_relu" was added
_LEGACY_OP_NAMES = OP_NAMES[:OP_NAMES.index("norm_relu")]
# Defaults of the settings a space may change (ghn_ext.spaces.spec.SearchSpace.ghn_defaults)
SPACE_SETTINGS = {"tile_channels": 32, "kernel": 7, "edge_bottlenecks": False}
LEGACY_NAMES = {"block_channels": "tile_channels"}  # old name -> new, as configs saved before the rename say


@dataclass(frozen=True)
class GHNConfig:
    """A GHN's architecture. Settings left at None take the space's defaults (its spec's ghn_defaults),
    then those of SPACE_SETTINGS."""
    space: str = "classification"
    hidden: int = 32              # node embedding / GRU size (paper: 32)
    message_hidden: int = 32      # message MLP hidden size (paper: 32)
    hyper_hidden: int = 64        # hypernet MLP hidden size (paper: 64)
    tile_channels: Optional[int] = None  # C of the weight tile the MLP emits per node, (C, C, K, K); every
                                  # weight is sliced from it or tiled with it. Default 32 (nb201: 64)
    kernel: Optional[int] = None  # K: largest kernel side of the space; default 7 (the 1x7 convs; 3 for
                                  # NAS-Bench-201, whose largest is 3x3: a tile a fifth of the size)
    T: int = 5                    # propagation passes
    scheme: str = "fb"            # "fb" forward-backward (Eq. 15) or "sync"
    share_params: bool = True     # stacked GHN shares GNN parameters across blocks (Table 5: SP)
    pass_embedding: bool = True   # hand the mean block embedding to the next block (Table 5: PE)
    naive_hypernet: bool = False  # one output branch per op type instead of one shared head
    max_blocks: int = 24          # parameter sets kept when blocks do not share them
    input_size: tuple[int, int, int] = (3, 32, 32)
    edge_bottlenecks: Optional[bool] = None  # bottlenecks from edge embeddings; default: anytime space

    def __post_init__(self):
        space_defaults = get_space(self.space).ghn_defaults if is_registered(self.space) else {}
        for name, default in SPACE_SETTINGS.items():
            if getattr(self, name) is None:
                object.__setattr__(self, name, space_defaults.get(name, default))
        if self.scheme not in SCHEMES:
            raise InputError(f"unknown propagation scheme {self.scheme!r}; choose one of {SCHEMES}")
        for name, low, high in (("hidden", 1, 4096), ("message_hidden", 1, 4096), ("hyper_hidden", 1, 4096),
                                ("tile_channels", 1, 1024), ("kernel", 1, 15), ("T", 1, MAX_PASSES),
                                ("max_blocks", 1, 4096)):
            require_int("GHN", name, getattr(self, name), low, high)
        object.__setattr__(self, "input_size", tuple(self.input_size))

    @classmethod
    def from_dict(cls, d: dict[str, Any], legacy: Optional[dict[str, Any]] = None) -> "GHNConfig":
        """The config `asdict` saved (its old field names read too); fields it lacks take `legacy`'s
        values, then today's defaults."""
        d = {LEGACY_NAMES.get(k, k): v for k, v in d.items()}
        known = {f.name for f in fields(cls)}
        return cls(**{**(legacy or {}), **{k: v for k, v in d.items() if k in known}})


def node_features(node: Node) -> list[float]:
    """One-hot of the op, plus one-hots of the stride, the scale and the exit flag."""
    f = [0.0] * NUM_FEATURES
    f[OP_INDEX[node.op]] = 1.0
    base = len(OP_NAMES)
    f[base + min(range(len(_STRIDES)), key=lambda i: abs(_STRIDES[i] - node.stride))] = 1.0
    base += len(_STRIDES)
    f[base + (_SCALES.index(node.scale) if node.scale in _SCALES else 0)] = 1.0
    f[-1] = float(node.exit)
    return f


@dataclass(frozen=True)
class EmissionPlan:
    """Where every weight of every graph of a batch comes from and lands in the flat buffer."""
    node_index: list[int]                 # global node of each target
    shapes: list[int]                     # (out, in, kh, kw) per target, flattened
    anchors: list[int]                    # (row, col) per target, flattened
    scales: list[float]
    keys: list[tuple[int, int, str, tuple[int, ...]]]  # (graph, node, name, real shape) per target

    @classmethod
    def build(cls, graphs: Sequence[ArchGraph], node_offsets: Sequence[int], kernel: int,
              input_size: tuple[int, int, int], edge_bottlenecks: bool = False) -> "EmissionPlan":
        """Every weight, or with `edge_bottlenecks` all but scaled nodes' bottlenecks (:class:`EdgePlan`)."""
        plan = cls([], [], [], [], [])
        for g, graph in enumerate(graphs):
            for v, params in param_shapes(graph, input_size).items():
                head = PRIMITIVES[graph.nodes[v].op].combine == "head"
                fan_in = None
                for j, (name, shape) in enumerate(params.items()):
                    if edge_bottlenecks and name == "bottleneck" and graph.nodes[v].scale:
                        continue
                    four = tuple(shape) + (1,) * (4 - len(shape)) if len(shape) > 1 else (shape[0], 1, 1, 1)
                    if len(shape) > 1:  # each weight its own fan-in; a bias keeps its weight's
                        fan_in = math.prod(shape[1:])
                    # first weight anchored top-left, second bottom-right, so they barely overlap
                    anchor = (0, 0) if j == 0 else (kernel - four[2], kernel - four[3])
                    gain = 1.0 if head else math.sqrt(2.0)
                    plan.node_index.append(node_offsets[g] + v)
                    plan.shapes.extend(four)
                    plan.anchors.extend(anchor)
                    plan.scales.append(gain / math.sqrt(fan_in or 1))
                    plan.keys.append((g, v, name, tuple(shape)))
        return plan

    def unflatten(self, flat: Tensor, num_graphs: int) -> list[dict[int, dict[str, Tensor]]]:
        return _unflatten(self.keys, flat, [{} for _ in range(num_graphs)])


def _unflatten(keys, flat: Tensor, out: list[dict[int, dict[str, Tensor]]]) -> list[dict[int, dict[str, Tensor]]]:
    """Cut `flat` into the weights named by `keys` ((graph, node, name, shape) each), added to `out`."""
    for (g, v, name, shape), piece in zip(keys, torch.split(flat, [math.prod(k[3]) for k in keys])):
        out[g].setdefault(v, {})[name] = piece.view(shape)
    return out


@dataclass(frozen=True)
class EdgePlan:
    """Scaled nodes' bottlenecks in edge mode: one 1x1 block per incoming edge, a piece of as many input
    channels as the parent has outputs, pieces in predecessor order (the order inputs are concatenated)."""
    edges: list[tuple[int, int]]          # global (parent, child) of each edge block / piece
    piece_ptr: list[int]                  # target t's pieces: piece_ptr[t]:piece_ptr[t+1]
    piece_channels: list[int]
    shapes: list[int]                     # (out, in, 1, 1) per target, flattened
    scales: list[float]
    keys: list[tuple[int, int, str, tuple[int, ...]]]

    @classmethod
    def build(cls, graphs: Sequence[ArchGraph], node_offsets: Sequence[int],
              input_size: tuple[int, int, int]) -> "EdgePlan":
        plan = cls([], [0], [], [], [], [])
        for g, graph in enumerate(graphs):
            out_shapes, preds, off = infer_shapes(graph, input_size), graph.predecessors(), node_offsets[g]
            for v, params in param_shapes(graph, input_size).items():
                if not graph.nodes[v].scale:
                    continue
                shape = params["bottleneck"]
                plan.edges.extend((off + u, off + v) for u in preds[v])
                plan.piece_channels.extend(out_shapes[u].channels for u in preds[v])
                plan.piece_ptr.append(len(plan.edges))
                plan.shapes.extend(shape)
                plan.scales.append(math.sqrt(2.0 / shape[1]))  # He: fan-in of the whole bottleneck
                plan.keys.append((g, v, "bottleneck", tuple(shape)))
        return plan


class GraphHyperNetwork(nn.Module):
    """A GHN: `ghn(archs)` generates every weight of the architectures, `ghn.score(archs)` ranks them.
    `scoring` says how it scores (default: its space's signal and skeleton); training records the
    skeleton it was trained in, and checkpoints carry it."""

    def __init__(self, config: GHNConfig = GHNConfig(), scoring: Optional[ScoringConfig] = None):
        super().__init__()
        self.config = cfg = config
        self.scoring = scoring or ScoringConfig.for_space(cfg.space)
        D, Hm, P = cfg.hidden, cfg.message_hidden, 1 if cfg.share_params else cfg.max_blocks
        self.embed = nn.Linear(NUM_FEATURES, D, bias=False)  # learned embedding of the one-hot

        def param(*shape, fan_in=D):
            b = 1.0 / math.sqrt(fan_in)
            return nn.Parameter(torch.empty(P, *shape).uniform_(-b, b))

        self.msg_w1, self.msg_b1 = param(Hm, D), param(Hm)
        self.msg_w2, self.msg_b2 = param(D, Hm, fan_in=Hm), param(D, fan_in=Hm)
        self.gru_w_ih, self.gru_w_hh = param(3 * D, D), param(3 * D, D)
        self.gru_b_ih, self.gru_b_hh = param(3 * D), param(3 * D)
        block_numel = cfg.tile_channels ** 2 * cfg.kernel ** 2
        if cfg.edge_bottlenecks:
            # 1x1 blocks from [parent, child] embeddings, unit variance at initialisation as the node
            # blocks below; edge_in's bias is U(-1/sqrt(2D), 1/sqrt(2D)), so E[z^2] ~ 1/(12D) here
            self.edge_in = nn.Linear(2 * D, cfg.hyper_hidden)
            self.edge_out = nn.Linear(cfg.hyper_hidden, cfg.tile_channels ** 2)
            nn.init.normal_(self.edge_out.weight, std=math.sqrt(12.0 * D / cfg.hyper_hidden))
            nn.init.zeros_(self.edge_out.bias)
        self.hyper_in = nn.Linear(D, cfg.hyper_hidden)
        branches = len(OP_NAMES) if cfg.naive_hypernet else 1
        self.hyper_out_w = nn.Parameter(torch.empty(branches, block_numel, cfg.hyper_hidden))
        self.hyper_out_b = nn.Parameter(torch.zeros(branches, block_numel))
        # Unit-variance blocks at initialisation: with the fan-in scale of the emission plan, the
        # generated weights then start near He initialisation and activations keep their size.
        # Embeddings start small (|h| << 1), so z = relu(hyper_in(h)) is dominated by hyper_in's bias,
        # U(-1/sqrt(D), 1/sqrt(D)): E[z^2] ~ 1/(6D), and a block entry has variance
        # std^2 * hyper_hidden / (6D) = 1 with this std.
        nn.init.normal_(self.hyper_out_w, std=math.sqrt(6.0 * D / cfg.hyper_hidden))

    # ------------------------------------------------------------------ the three stages
    def gnn_params(self) -> GNNParams:
        return GNNParams(self.msg_w1, self.msg_b1, self.msg_w2, self.msg_b2,
                         self.gru_w_ih, self.gru_w_hh, self.gru_b_ih, self.gru_b_hh)

    def initial_embeddings(self, batch: GraphBatch) -> Tensor:
        feats = [node_features(n) for g in batch.graphs for n in g.nodes]
        x = torch.tensor(feats, dtype=self.embed.weight.dtype, device=self.embed.weight.device)
        return self.embed(x)

    def propagate(self, batch: GraphBatch, h0: Tensor) -> Tensor:
        cfg = self.config
        if not cfg.share_params and max(g.num_blocks for g in batch.graphs) > cfg.max_blocks:
            raise InputError(f"graph has more blocks than the {cfg.max_blocks} parameter sets of this GHN")
        intra = batch.edge_index[:, batch.block_edge_mask]
        schedule = dag_schedule(intra, batch.block_ptr, batch.num_nodes)
        return propagate(h0, batch.block_ptr, batch.graph_block_ptr, schedule,
                         self.gnn_params(), cfg.T, cfg.scheme, cfg.pass_embedding)

    def blocks(self, batch: GraphBatch, h: Tensor) -> Tensor:
        """The hypernet H: (N, D) embeddings -> (N, C, C, K, K) kernel blocks."""
        cfg = self.config
        z = torch.relu(self.hyper_in(h))
        if cfg.naive_hypernet:
            # each node through its op's branch; grouped by op so that no (N, C*C*K*K, hidden) copy
            # of the branch weights is ever gathered
            op = batch.op_index.to(h.device)
            order = torch.argsort(op, stable=True)
            ops, counts = torch.unique_consecutive(op[order], return_counts=True)
            pieces = [z[idx] @ self.hyper_out_w[o].t() + self.hyper_out_b[o]
                      for o, idx in zip(ops.tolist(), order.split(counts.tolist()))]
            out = torch.cat(pieces)[torch.argsort(order)]
        else:
            out = z @ self.hyper_out_w[0].t() + self.hyper_out_b[0]
        c, k = cfg.tile_channels, cfg.kernel
        return out.view(-1, c, c, k, k)

    def edge_blocks(self, h: Tensor, edges: Sequence[tuple[int, int]]) -> Tensor:
        """The edge hypernet: (N, D) embeddings and (parent, child) pairs -> (E, C, C, 1, 1) blocks."""
        idx = torch.tensor(edges, dtype=torch.int64, device=h.device).view(-1, 2)
        z = torch.relu(self.edge_in(torch.cat([h[idx[:, 0]], h[idx[:, 1]]], dim=1)))
        c = self.config.tile_channels
        return self.edge_out(z).view(-1, c, c, 1, 1)

    def emit(self, batch: GraphBatch, blocks: Tensor, h: Optional[Tensor] = None
             ) -> list[dict[int, dict[str, Tensor]]]:
        """Every weight of every graph; edge mode needs the embeddings `h` as well."""
        cfg, offsets = self.config, batch.node_ptr.tolist()
        plan = EmissionPlan.build(batch.graphs, offsets, cfg.kernel, cfg.input_size, cfg.edge_bottlenecks)
        flat = emit_weights(blocks, plan.node_index, plan.shapes, plan.anchors, plan.scales)
        weights = plan.unflatten(flat, batch.num_graphs)
        if cfg.edge_bottlenecks:
            edge = EdgePlan.build(batch.graphs, offsets, cfg.input_size)
            if edge.keys:
                if h is None:
                    raise InputError("edge-mode emission needs the node embeddings h")
                flat = emit_edge_weights(self.edge_blocks(h, edge.edges), edge.piece_ptr,
                                         list(range(len(edge.edges))), edge.piece_channels, edge.shapes,
                                         [0, 0] * len(edge.scales), edge.scales)
                _unflatten(edge.keys, flat, weights)
        return weights

    # ------------------------------------------------------------------ public API
    def forward(self, arch_or_batch: ArchGraph | Sequence[ArchGraph] | GraphBatch):
        """Every free weight of the architectures, generated (differentiable w.r.t. the GHN's parameters).

        arch_or_batch: an ArchGraph, a sequence of them or a GraphBatch, of this GHN's space (or "custom").
        Returns for one graph a {node index: {weight name: tensor}} mapping, for several a list of them;
        each tensor has the shape the node's op takes (ghn_ext.nets.network.param_shapes: a conv's
        (out, in / groups, kh, kw), a bias's (out,)), ready for ghn_ext.nets.run_network."""
        graphs = as_graph_list(arch_or_batch)
        for g in graphs:
            self.check_space(g)
        batch = arch_or_batch if isinstance(arch_or_batch, GraphBatch) else GraphBatch.from_graphs(graphs)
        h = self.propagate(batch, self.initial_embeddings(batch))
        weights = self.emit(batch, self.blocks(batch, h), h)
        return weights[0] if isinstance(arch_or_batch, ArchGraph) else weights

    def score(self, archs: Sequence[str | ArchGraph], images=None, *, signal: Optional[str] = None,
              skeleton: Optional[dict[str, Any]] = None, data_dir: Optional[str] = None, archs_per_batch: int = 4,
              progress: bool = False) -> list[float]:
        """Scores of `archs`, in order, higher is better: cell strings in the space's text format or
        ArchGraphs, scored as :func:`ghn_ext.models.scoring.score` says (by default on the first 5,000
        validation images of CIFAR-10, with this GHN's signal, in its scoring skeleton). `images` is a
        count of validation images or a ghn_ext.core.data.Split."""
        return score(self, archs, images, signal=signal, skeleton=skeleton, data_dir=data_dir,
                     archs_per_batch=archs_per_batch, progress=progress)

    def check_space(self, graph: ArchGraph) -> None:
        if graph.space != self.config.space and graph.space != "custom":
            raise InputError(f"this GHN was built for the {self.config.space!r} space, "
                             f"got a {graph.space!r} architecture")

    @torch.no_grad()
    def materialize(self, arch: ArchGraph) -> ArchNetwork:
        """The architecture as an nn.Module initialised with generated weights (BatchNorm uses batch
        statistics, as when the GHN scores it): an AnytimeNetwork, which returns every exit's logits,
        when the architecture has early exits."""
        anytime_net = ((is_registered(arch.space) and get_space(arch.space).anytime)
                       or sum(PRIMITIVES[n.op].combine == "head" for n in arch.nodes) > 1)
        cls = AnytimeNetwork if anytime_net else ArchNetwork
        return cls(arch, self.config.input_size, weights=self(arch), track_running_stats=False)

    def save(self, path: str | Path, extra: Optional[dict[str, Any]] = None) -> None:
        atomic_save(with_checksum({"format": CHECKPOINT_FORMAT, "config": asdict(self.config),
                                   "scoring": self.scoring.to_dict(), "op_names": list(OP_NAMES),
                                   "state_dict": self.state_dict(), **(extra or {})}),
                    path)

    @classmethod
    def pretrained(cls, name: str, map_location="cpu") -> "GraphHyperNetwork":
        """A GHN shipped with the package ("nb201", ...: ghn_ext.models.pretrained.manifest()), checksum-verified."""
        return cls.load(pretrained_path(name), map_location=map_location)

    @classmethod
    def load(cls, path: str | Path, space: Optional[str] = None, map_location="cpu") -> "GraphHyperNetwork":
        ckpt = load_checkpoint(path, CHECKPOINT_FORMAT, map_location, what="GHN")
        try:
            # configs that lack a space setting were written when it had the default of the time
            config = GHNConfig.from_dict(ckpt["config"], legacy={"tile_channels": 32})
            scoring = (ScoringConfig.from_dict(ckpt["scoring"]) if "scoring" in ckpt
                       else ScoringConfig.for_space(config.space, ckpt.get("train_config")))
            ghn = cls(config, scoring)
            ghn.load_state_dict(remap_vocabulary(ckpt["state_dict"], ckpt.get("op_names", _LEGACY_OP_NAMES)))
        except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as exc:
            raise CheckpointError(f"checkpoint {path} does not hold a valid GHN: {exc}") from exc
        bad = [name for name, p in ghn.state_dict().items() if not torch.isfinite(p).all()]
        if bad:  # it would score every architecture alike (at chance) without a word
            raise CheckpointError(f"checkpoint {path} holds non-finite values (NaN or inf) in {', '.join(bad)}")
        if space is not None and config.space != space:
            raise CheckpointError(f"checkpoint {path} is a GHN for the {config.space!r} space, "
                                  f"not {space!r}")
        return ghn


def remap_vocabulary(state: dict[str, Tensor], op_names: Sequence[str]) -> dict[str, Tensor]:
    """A GHN state dict written with the op vocabulary `op_names`, rewritten for this one: the op columns
    of the input embedding (and a naive hypernet's branches) are matched by name, and an op the
    checkpoint never saw gets zeros (no embedding, no branch) and so never occurs in its training."""
    op_names = list(op_names)
    if op_names == list(OP_NAMES):
        return state
    unknown = [op for op in op_names if op not in OP_INDEX]
    if unknown:
        raise InputError(f"it was written for ops this version does not know: {unknown}")
    state = dict(state)
    old = state["embed.weight"]
    embed = old.new_zeros(old.shape[0], NUM_FEATURES)
    for i, op in enumerate(op_names):
        embed[:, OP_INDEX[op]] = old[:, i]
    embed[:, len(OP_NAMES):] = old[:, len(op_names):]  # stride, scale and exit features
    state["embed.weight"] = embed
    for key in ("hyper_out_w", "hyper_out_b"):
        if state[key].shape[0] > 1:  # one branch per op
            branches = state[key].new_zeros(len(OP_NAMES), *state[key].shape[1:])
            for i, op in enumerate(op_names):
                branches[OP_INDEX[op]] = state[key][i]
            state[key] = branches
    return state
