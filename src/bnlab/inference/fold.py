"""``fold``: the inference network of Alg. 2 (step 11), with BN folded into the layer before it.

At inference a BN layer is the fixed map y = scale·x + shift with scale = γ/√(Var[x]+ε) and
shift = β − scale·E[x] (one per feature map for convolutional BN: the same map at every location, §3.2).
When its input is the output of a convolution or linear layer z = W∗u + b, and nothing else uses z, the
two compose into one layer with

    W' = scale · W   (each output channel's filter scaled),    b' = scale · b + shift

For ``ConvTranspose`` the output channels are the second axis of the weight (per group). Everything is
computed in float64 and cast back to the layer's dtype.

Pairs are found in the module graph, not by names: the model is traced with ``torch.fx`` (BN, conv,
linear layers as leaves) and a BN layer is folded when its only argument is the output of a conv/linear
call used by nothing else, each of the two modules is called once, and neither has forward hooks. If the
model cannot be traced (data-dependent control flow), only the pairs that follow each other inside an
``nn.Sequential`` are folded, with a warning. Every other BN layer — per-activation BN (a scale per
location cannot enter a convolution's weights), BN after a ReLU, a residual sum, a shared or hooked
layer — becomes an :class:`Affine` (a BN layer's own forward hooks move to its Affine and keep running).
A ``Linear → BatchNorm1d`` pair assumes the usual (N, features) input.
"""

from __future__ import annotations

import copy
import warnings

import torch
from torch import nn

from .layers import (
    Affine,
    accumulation_dtype,
    bn_layers,
    describe,
    inference_map,
    is_bn,
    is_uninitialized,
    module_counts,
    per_activation,
    replace_module,
)

__all__ = ["fold"]

_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_CONV_T = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
_TARGETS = (*_CONV, *_CONV_T, nn.Linear)


class _Tracer(torch.fx.Tracer):
    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return is_bn(m) or isinstance(m, (*_TARGETS, Affine)) or super().is_leaf_module(m, qualname)


def _out_channels(layer: nn.Module) -> int:
    return layer.out_features if isinstance(layer, nn.Linear) else layer.out_channels


def _foldable(layer: nn.Module, bn: nn.Module, counts: dict[int, int]) -> bool:
    """Can ``bn`` enter ``layer``'s weights: a per-channel map over its outputs, plain modules, not shared."""
    if not isinstance(layer, _TARGETS) or not is_bn(bn):
        return False
    if counts.get(id(layer), 0) != 1 or counts.get(id(bn), 0) != 1:
        return False
    if is_uninitialized(layer.weight) or bn.running_mean is None or is_uninitialized(bn.running_mean):
        return False
    if bn.running_mean.dim() != 1 or bn.running_mean.shape[0] != _out_channels(layer):
        return False  # per-activation statistics (C, H, W), or a mismatch: not a per-channel map
    if per_activation(bn) and not isinstance(layer, nn.Linear):
        return False
    if not layer.weight.is_floating_point():
        return False
    # hooks (old-style weight_norm, user hooks) or parametrizations could change the weight or the output
    hooks = (layer._forward_pre_hooks, layer._forward_hooks, bn._forward_pre_hooks, bn._forward_hooks)
    if any(hooks) or torch.nn.utils.parametrize.is_parametrized(layer):
        return False
    return True


def _pairs_from_graph(model: nn.Module, counts: dict[int, int]) -> list[tuple[nn.Module, nn.Module]]:
    graph = _Tracer().trace(model)
    calls: dict[int, int] = {}
    module_of = {}
    for node in graph.nodes:
        if node.op == "call_module":
            m = model.get_submodule(node.target)
            module_of[node] = m
            calls[id(m)] = calls.get(id(m), 0) + 1
    pairs = []
    for node, bn in module_of.items():
        if not is_bn(bn) or len(node.args) != 1 or node.kwargs:
            continue
        src = node.args[0]
        layer = module_of.get(src) if isinstance(src, torch.fx.Node) else None
        if layer is None or len(src.users) != 1 or calls[id(layer)] != 1 or calls[id(bn)] != 1:
            continue
        if _foldable(layer, bn, counts):
            pairs.append((layer, bn))
    return pairs


def _pairs_from_sequentials(model: nn.Module, counts: dict[int, int]) -> list[tuple[nn.Module, nn.Module]]:
    pairs = []
    for seq in model.modules():
        if not isinstance(seq, nn.Sequential) or type(seq).forward is not nn.Sequential.forward:
            continue
        children = list(seq)
        for layer, bn in zip(children, children[1:], strict=False):
            if _foldable(layer, bn, counts):
                pairs.append((layer, bn))
    return pairs


def _fold_into(layer: nn.Module, scale: torch.Tensor, shift: torch.Tensor) -> None:
    """W' = scale·W along the output channels, b' = scale·b + shift (in float64, cast back)."""
    w = layer.weight
    acc = accumulation_dtype(w.device)
    scale, shift = scale.to(w.device), shift.to(w.device)
    w64 = w.detach().to(acc)
    if isinstance(layer, _CONV_T):
        g = layer.groups
        shape = w64.shape
        # (in, out/g, *k) -> (g, in/g, out/g, *k); output channel o = group·(out/g) + j
        w64 = w64.reshape(g, shape[0] // g, shape[1], *shape[2:])
        s = scale.reshape(g, 1, shape[1], *([1] * (len(shape) - 2)))
        new_w = (w64 * s).reshape(shape)
    else:
        new_w = w64 * scale.reshape(-1, *([1] * (w64.dim() - 1)))
    b64 = torch.zeros_like(scale) if layer.bias is None else layer.bias.detach().to(acc)
    new_b = b64 * scale + shift
    bias_dtype = w.dtype if layer.bias is None else layer.bias.dtype
    grad = w.requires_grad
    layer.weight = nn.Parameter(new_w.to(w.dtype), requires_grad=grad)
    layer.bias = nn.Parameter(
        new_b.to(bias_dtype), requires_grad=grad if layer.bias is None else layer.bias.requires_grad
    )


_HOOK_DICTS = (
    "_forward_pre_hooks",
    "_forward_pre_hooks_with_kwargs",
    "_forward_hooks",
    "_forward_hooks_with_kwargs",
    "_forward_hooks_always_called",
)


def _keep_hooks(old: nn.Module, new: nn.Module) -> None:
    """The forward (pre-)hooks of a BN layer keep running on the Affine map that replaces it."""
    for attr in _HOOK_DICTS:
        if hasattr(old, attr) and hasattr(new, attr):
            getattr(new, attr).update(getattr(old, attr))


def _relu_or(bn: nn.Module, inference: nn.Module) -> nn.Module:
    """What replaces ``bn``: its inference map, followed by its fused ReLU (``activation="relu"``) if it has one."""
    if getattr(bn, "activation", None) != "relu":
        return inference
    return nn.ReLU() if isinstance(inference, nn.Identity) else nn.Sequential(inference, nn.ReLU())


def fold(model: nn.Module) -> nn.Module:
    """The inference network of ``model``: a new module in eval mode with no BN layer left.

    Each BN layer directly after a Conv1d/2d/3d, ConvTranspose1d/2d/3d or Linear (with or without bias,
    any groups, any floating dtype) is folded into that layer's weights and replaced by ``nn.Identity``;
    every other BN layer becomes an :class:`Affine`. A bnlab layer's fused ReLU (``activation="relu"``) stays:
    ``nn.ReLU`` instead of the Identity, ``Sequential(Affine, ReLU)`` instead of the Affine. ``model`` itself
    is not changed. Outputs equal ``model.eval()``'s up to rounding.

    Raises ValueError naming the layer when a BN layer cannot be turned into its inference map: no
    running statistics (``track_running_stats=False``; call :func:`bnlab.recalibrate` first), a lazy layer
    that has not seen an input, or non-finite statistics.

    >>> import torch
    >>> model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8), torch.nn.ReLU())
    >>> _ = model(torch.randn(16, 3, 8, 8))           # training moves the running statistics
    >>> folded = fold(model)
    >>> folded
    Sequential(
      (0): Conv2d(3, 8, kernel_size=(3, 3), stride=(1, 1))
      (1): Identity()
      (2): ReLU()
    )
    >>> x = torch.randn(2, 3, 8, 8)
    >>> bool((folded(x) - model.eval()(x)).abs().max() < 1e-5)
    True
    """
    for name, bn in bn_layers(model):  # every layer must have an inference map; fail before copying
        inference_map(name, bn)
    net = copy.deepcopy(model).eval()
    counts = module_counts(net)
    try:
        pairs = [] if is_bn(net) else _pairs_from_graph(net, counts)
    except Exception as e:  # any tracing failure means: use the Sequential structure
        pairs = _pairs_from_sequentials(net, counts)
        warnings.warn(
            f"fold: torch.fx could not trace {type(model).__name__} ({type(e).__name__}: {e}); folded only "
            f"the conv/linear → BN pairs inside nn.Sequential containers, other BN layers become Affine maps",
            stacklevel=2,
        )
    names = {id(m): n for n, m in net.named_modules()}
    folded = set()
    with torch.no_grad():
        for layer, bn in pairs:
            scale, shift = inference_map(names[id(bn)], bn)
            _fold_into(layer, scale, shift)
            net = replace_module(net, bn, _relu_or(bn, nn.Identity()))
            folded.add(id(bn))
        for name, bn in bn_layers(net):
            if id(bn) in folded:
                continue
            scale, shift = inference_map(name, bn)
            dtype = bn.running_mean.dtype
            per = "activation" if per_activation(bn) and scale.dim() > 1 else "channel"
            if per == "channel" and scale.dim() != 1:
                raise ValueError(
                    f"cannot fold: layer {describe(name, bn)} has statistics of shape {tuple(scale.shape)}"
                )
            affine = _relu_or(bn, Affine(scale.to(dtype), shift.to(dtype), per=per))
            _keep_hooks(bn, affine)
            net = replace_module(net, bn, affine)
    return net.eval()
