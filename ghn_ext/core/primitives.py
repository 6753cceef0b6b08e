"""The operation vocabulary shared by every search space.

Each op says which free weights it needs (shapes derived from the node and its input channels) and
how it transforms one input tensor with those weights. How a node combines several inputs is the
op's `combine` rule: ``"apply_sum"`` applies the op to each input and sums the results (paper Eq. 7),
``"concat"`` concatenates inputs along channels, ``"source"`` is the network's image input and
``"head"`` pools and classifies. A node with a scale (anytime space, appendix 7.1) overrides
``apply_sum``: it brings every input to its scale, concatenates them and applies a 1x1 bottleneck,
then its op once (:func:`concat_bottleneck`).

Weights are plain tensors passed in from outside (a hypernetwork or an ``nn.Module``); BatchNorm has
no affine parameters, so this table names every free weight a network has.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

Shape = tuple[int, ...]
ParamFn = Callable[[int, int], dict[str, Shape]]  # (in_channels, out_channels) -> {name: shape}


@dataclass(frozen=True)
class Primitive:
    name: str
    combine: str                    # "apply_sum" | "concat" | "source" | "head"
    params: ParamFn                 # free weights for given in/out channels
    apply: Callable[..., Tensor]    # (x, weights, stride, norm) -> y, for one input
    uses_norm: bool                 # ends in BatchNorm (one per input under apply_sum)
    keeps_channels: bool = False    # output channels must equal input channels (identity, pools)
    allows_stride: bool = True


def _no_params(cin: int, cout: int) -> dict[str, Shape]:
    return {}


def _conv(kh: int, kw: int) -> ParamFn:
    return lambda cin, cout: {"weight": (cout, cin, kh, kw)}


def _sep(k: int) -> ParamFn:
    return lambda cin, cout: {"depthwise": (cin, 1, k, k), "pointwise": (cout, cin, 1, 1)}


def _relu_conv(x: Tensor, w: Mapping[str, Tensor], stride: int, norm) -> Tensor:
    weight = w["weight"]
    if weight.shape[-2:] == (1, 1) and stride > 1:
        # The same result as a strided 1x1 convolution, and it avoids a oneDNN bug: that op's
        # backward-weights kernel writes past its buffer for channels-last input on x86 CPUs
        # (torch 2.14; valgrind finds it, and the heap corruption crashed CI in a later test).
        return norm(F.conv2d(F.relu(x[:, :, ::stride, ::stride]), weight))
    pad = (weight.shape[-2] // 2, weight.shape[-1] // 2)
    return norm(F.conv2d(F.relu(x), weight, stride=stride, padding=pad))


def _sep_conv(dilation: int):
    def apply(x: Tensor, w: Mapping[str, Tensor], stride: int, norm) -> Tensor:
        dw = w["depthwise"]
        pad = dilation * (dw.shape[-1] // 2)
        y = F.conv2d(F.relu(x), dw, stride=stride, padding=pad, dilation=dilation, groups=x.shape[1])
        return norm(F.conv2d(y, w["pointwise"]))
    return apply


def _conv_1x7_7x1(x: Tensor, w: Mapping[str, Tensor], stride: int, norm) -> Tensor:
    y = F.conv2d(F.relu(x), w["weight_1x7"], stride=(1, stride), padding=(0, 3))
    return norm(F.conv2d(y, w["weight_7x1"], stride=(stride, 1), padding=(3, 0)))


def _stem(x: Tensor, w: Mapping[str, Tensor], stride: int, norm) -> Tensor:
    return norm(F.conv2d(x, w["weight"], stride=stride, padding=1))


def _identity(x: Tensor, w, stride: int, norm) -> Tensor:
    return x


def _zero(x: Tensor, w, stride: int, norm) -> Tensor:
    return torch.zeros_like(x)


def _max_pool(x: Tensor, w, stride: int, norm) -> Tensor:
    return F.max_pool2d(x, 3, stride=stride, padding=1)


def _avg_pool(x: Tensor, w, stride: int, norm) -> Tensor:
    return F.avg_pool2d(x, 3, stride=stride, padding=1, count_include_pad=False)


def _pool_conv(x: Tensor, w: Mapping[str, Tensor], stride: int, norm) -> Tensor:
    # Residual shortcut of NAS-Bench-201's reduction block: 2x2 average pool, then a 1x1 conv.
    # ceil_mode keeps odd sizes at ceil(H / stride), like the strided 3x3 conv branch it is summed with.
    return F.conv2d(F.avg_pool2d(x, kernel_size=stride, stride=stride, ceil_mode=True), w["weight"])


def _norm_relu(x: Tensor, w, stride: int, norm) -> Tensor:
    # NAS-Bench-201's last activation (BatchNorm, ReLU) between the final cell and the pooling: without
    # it, cells that chain skip connections hand the classifier activations that grow with depth
    return F.relu(norm(x))


def _classifier(x: Tensor, w: Mapping[str, Tensor], stride: int, norm) -> Tensor:
    return F.linear(x.mean(dim=(2, 3)), w["weight"], w["bias"])


def _classifier_params(cin: int, cout: int) -> dict[str, Shape]:
    return {"weight": (cout, cin), "bias": (cout,)}


def _p(name, combine, params, apply, uses_norm, **kw) -> Primitive:
    return Primitive(name, combine, params, apply, uses_norm, **kw)


PRIMITIVES: dict[str, Primitive] = {p.name: p for p in [
    # structure
    _p("input", "source", _no_params, _identity, False, allows_stride=False),
    _p("stem_conv", "apply_sum", _conv(3, 3), _stem, True),
    _p("bottleneck", "apply_sum", _conv(1, 1), _relu_conv, True),
    _p("concat", "concat", _no_params, _identity, False, allows_stride=False),
    _p("sum", "apply_sum", _no_params, _identity, False, keeps_channels=True, allows_stride=False),
    _p("pool_conv1x1", "apply_sum", _conv(1, 1), _pool_conv, False),
    _p("classifier", "head", _classifier_params, _classifier, False, allows_stride=False),
    # cell operations
    _p("identity", "apply_sum", _no_params, _identity, False, keeps_channels=True, allows_stride=False),
    _p("zero", "apply_sum", _no_params, _zero, False, keeps_channels=True, allows_stride=False),
    _p("conv1x1", "apply_sum", _conv(1, 1), _relu_conv, True),
    _p("conv3x3", "apply_sum", _conv(3, 3), _relu_conv, True),
    _p("conv5x5", "apply_sum", _conv(5, 5), _relu_conv, True),
    _p("sep_conv3x3", "apply_sum", _sep(3), _sep_conv(1), True),
    _p("sep_conv5x5", "apply_sum", _sep(5), _sep_conv(1), True),
    _p("dil_sep_conv3x3", "apply_sum", _sep(3), _sep_conv(2), True),
    _p("dil_sep_conv5x5", "apply_sum", _sep(5), _sep_conv(2), True),
    _p("conv1x7_7x1", "apply_sum",
       lambda cin, cout: {"weight_1x7": (cout, cin, 1, 7), "weight_7x1": (cout, cout, 7, 1)},
       _conv_1x7_7x1, True),
    _p("max_pool3x3", "apply_sum", _no_params, _max_pool, False, keeps_channels=True),
    _p("avg_pool3x3", "apply_sum", _no_params, _avg_pool, False, keeps_channels=True),
    # appended, not grouped with the structure ops above: a node's one-hot index is its position, and
    # GHN checkpoints written before it existed are read by name (ghn_ext.models.ghn.remap_vocabulary)
    _p("norm_relu", "apply_sum", _no_params, _norm_relu, True, keeps_channels=True, allows_stride=False),
]}

# Fixed order of the vocabulary: a node's op one-hot index is its position here.
OP_NAMES: tuple[str, ...] = tuple(PRIMITIVES)
OP_INDEX: dict[str, int] = {name: i for i, name in enumerate(OP_NAMES)}


def resample(x: Tensor, size: int) -> Tensor:
    """A square feature map brought to `size` x `size`: average pooling down, nearest upsampling up
    (sizes must divide one another; shape inference checks that before any tensor is touched)."""
    h = x.shape[-1]
    if h > size:
        return F.avg_pool2d(x, h // size)
    if h < size:
        return F.interpolate(x, scale_factor=size // h, mode="nearest")
    return x


def concat_bottleneck(inputs: Sequence[Tensor], bottleneck: Tensor, scale: int, norm) -> Tensor:
    """Input of a scaled node's op: every input resampled to `scale`, concatenated along channels in
    predecessor order, then ReLU-conv1x1-BN with `bottleneck` of shape (C, sum of input channels, 1, 1)."""
    x = torch.cat([resample(t, scale) for t in inputs], dim=1)
    return _relu_conv(x, {"weight": bottleneck}, 1, norm)


def batch_norm(x: Tensor, running: Optional[tuple[Tensor, Tensor]], training: bool) -> Tensor:
    """BatchNorm without affine parameters; batch statistics unless running stats are given for eval."""
    if running is None:
        return F.batch_norm(x, None, None, training=True)
    mean, var = running
    return F.batch_norm(x, mean, var, training=training, momentum=0.1)
