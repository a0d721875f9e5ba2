"""Classifiers whose normalization is a parameter: a small CNN and the paper's Fig. 1 MLP.

``norm`` and ``per`` pick the set B of every normalization layer, in the one vocabulary of
:mod:`bnlab.vocabulary` (Ioffe & Szegedy 2015):

- ``"none"``: no normalization; convolutions and linear layers keep their bias;
- ``"batch"`` with ``per="channel"``: convolutional BN (§3.2), one μ/σ² and one (γ, β) per feature map;
  with ``per="activation"``: per-activation BN (§3), one μ/σ² and one (γ, β) per (channel, location);
- ``"layer"``, ``"instance"``, ``"group"``: the rest of the family (:mod:`bnlab.nn.family`), sets within
  one sample: layer norm over (C, H, W) with one (γ, β) per value, instance norm over (H, W), group norm
  over groups of C/G channels (G = gcd(C, 8)), one (γ, β) per channel. In the classifier head (input
  (N, C), no locations) "instance" uses layer norm: one value per set would have no variance.
- ``"renorm"``: Batch Renormalization (Ioffe 2017, :mod:`bnlab.nn.renorm`), per channel or per activation:
  BN's set B, corrected toward the running statistics; ``renorm_steps`` (the run's length in steps) scales
  the paper's warm-up and relaxation to the run (:func:`renorm_schedule`).

The old spellings ``norm="channel"`` and ``norm="activation"`` (batch normalization per channel / per
activation) are still accepted, without a warning: they are what saved specs, scripts and the results of
the studies say, and they read as one exact pair (:func:`bnlab.vocabulary.parse_norm`). ``model.spec``
always speaks the new words.

``dense_norm`` (ablations, for the small-batch study) changes only the normalization after the dense layer
of the head: ``True`` (default) the same as ``norm``; ``False`` none (the dense layer gets its bias back, so
the normalization is in the conv blocks only); ``"layer"`` layer norm there (a set B inside one example:
the dense layer's 64 values, instead of BN's m values).

Every model is described by a :class:`bnlab.spec.ModelSpec`; :func:`build_model` builds from it (or from
its plain dict, ``model.spec``, which checkpoints store).

A conv or linear layer that feeds a BN has no bias: BN subtracts the mean, so a bias would be cancelled
and β takes its role (§3.2). For a fully connected layer (input (N, C)) both variants are the same set B.

Every nonlinearity is its own module, so the input to one of them — a *pre-activation* — can be watched
with a forward pre-hook (:class:`UnitRecorder`), as in the paper's Fig. 1(b, c):

>>> model = SmallCNN(in_channels=1, image_size=(8, 8), num_classes=10, norm="batch", per="channel")
>>> model.pre_activation_layers()
['features.act1', 'features.act2', 'head.act3']
>>> count_parameters(model)["bn"]                   # 2·C per BN layer: 2·16 + 2·32 + 2·64
224
>>> count_parameters(SmallCNN(1, (8, 8), 10, norm="batch", per="activation"))["bn"]  # 2·C·H·W for the convs
3200
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import nn

from . import choices as _choices
from . import nn as bnn
from .spec import ModelSpec

__all__ = [
    "NORMS",
    "PER",
    "FAMILY_NORMS",
    "RENORM_NORMS",
    "ACTIVATIONS",
    "ARCHS",
    "SmallCNN",
    "PaperMLP",
    "ModelSpec",
    "build_model",
    "model_spec",
    "count_parameters",
    "bn_layers",
    "renorm_schedule",
    "UnitRecorder",
]

# the words live in bnlab.choices (torch-free), which the CLI parser reads too
#: Normalizations of the models: batch, renorm, layer, instance, group, none (:mod:`bnlab.vocabulary`).
NORMS = _choices.NORMS
#: Where ``batch`` and ``renorm`` pool: per channel or per activation.
PER = _choices.PER
#: The members whose set B stays within one sample.
FAMILY_NORMS = _choices.FAMILY_NORMS
#: Batch Renormalization.
RENORM_NORMS = _choices.RENORM_NORMS
ACTIVATIONS = _choices.ACTIVATIONS
ARCHS = _choices.ARCHS
_PER_SAMPLE = FAMILY_NORMS  # the members whose sets stay within one sample


def _activation(name: str) -> nn.Module:
    return nn.ReLU() if name == "relu" else nn.Sigmoid()


def _family(norm: str, channels: int, size: tuple[int, ...]) -> nn.Module:
    """A per-sample member of the family for an input (N, channels, *size)."""
    if norm == "layer" or (norm == "instance" and not size):
        return bnn.LayerNorm((channels, *size))
    if norm == "instance":
        return bnn.InstanceNorm2d(channels, affine=True)
    return bnn.GroupNorm(math.gcd(channels, 8), channels)


def renorm_schedule(steps: int | None) -> dict:
    """Batch Renorm's warm-up and relaxation for a run of ``steps`` training steps, as keyword arguments.

    The paper (Ioffe 2017, §4.1) keeps rmax = 1, dmax = 0 (BN) for 5k steps, then relaxes linearly to
    rmax = 3 at 40k steps and dmax = 5 at 25k. Here those step counts keep their proportions and are
    scaled so that rmax is fully relaxed at half the run: warm-up (BN) for the first ``steps``/16 steps,
    dmax = 5 at 5·``steps``/16, rmax = 3 at ``steps``/2. ``None``: the paper's own step counts.

    >>> s = renorm_schedule(160)
    >>> s["warmup_steps"], s["rmax"](80), s["dmax"](50)
    (10, 3.0, 5.0)
    """
    if steps is None:
        return {"warmup_steps": 5000, **bnn.paper_relaxation()}
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"renorm_steps must be a positive int (the run's training steps) or None, got {steps!r}")
    first = steps // 16
    return {"warmup_steps": first,
            **bnn.paper_relaxation(rmax_steps=(first, max(first, steps // 2)),
                                   dmax_steps=(first, max(first, 5 * steps // 16)))}  # fmt: skip


def _bn2d(norm: str, per: str | None, channels: int, size: tuple[int, int], renorm_steps: int | None) -> nn.Module:
    if norm in _PER_SAMPLE:
        return _family(norm, channels, size)
    where = {"per": "activation", "spatial_size": size} if per == "activation" else {}
    if norm == "renorm":
        return bnn.BatchRenorm2d(channels, **where, **renorm_schedule(renorm_steps))
    return bnn.BatchNorm2d(channels, **where)


def _bn1d(norm: str, per: str | None, features: int, renorm_steps: int | None = None) -> nn.Module:
    # input (N, C): both variants pool the same m values; spatial_size=() keeps per-activation eager
    if norm in _PER_SAMPLE:
        return _family(norm, features, ())
    where = {"per": "activation", "spatial_size": ()} if per == "activation" else {}
    if norm == "renorm":
        return bnn.BatchRenorm1d(features, **where, **renorm_schedule(renorm_steps))
    return bnn.BatchNorm1d(features, **where)


class _Recordable(nn.Module):
    """Shared helpers: the spec to rebuild the model, and the names of its nonlinearities."""

    model_spec: ModelSpec

    @property
    def spec(self) -> dict:
        """The plain dict of :attr:`model_spec` (what checkpoints store; :func:`build_model` reads it)."""
        return self.model_spec.to_dict()

    def pre_activation_layers(self) -> list[str]:
        """Names of the nonlinearity modules, first to last; their inputs are the pre-activations."""
        return [name for name, m in self.named_modules() if isinstance(m, (nn.ReLU, nn.Sigmoid))]


class SmallCNN(_Recordable):
    """Conv blocks + classifier head, with ``norm`` in :data:`NORMS` (``per`` in :data:`PER` for ``batch`` and
    ``renorm``; default ``channel``) and ``activation`` in :data:`ACTIVATIONS`.

    ``features``: for each width, conv 3×3 (padding 1) → BN → nonlinearity → max-pool 2×2;
    ``head``: flatten → linear ``hidden`` → BN → nonlinearity → linear ``num_classes`` (with bias: it feeds
    the softmax, not a BN). On 8×8 digits with the default widths (16, 32) the maps are 8×8 then 4×4.
    ``dense_norm=False``: no normalization in the head (the ablation of the small-batch study);
    ``renorm_steps``: see :func:`renorm_schedule` (``norm="renorm"`` only).
    """

    def __init__(
        self,
        in_channels: int,
        image_size: Sequence[int],
        num_classes: int,
        norm: str = "batch",
        activation: str = "relu",
        widths: Sequence[int] = (16, 32),
        hidden: int = 64,
        dense_norm: bool | str = True,
        renorm_steps: int | None = None,
        *,
        per: str | None = None,
    ) -> None:
        super().__init__()
        h, w = (int(s) for s in image_size)
        spec = ModelSpec.cnn(int(in_channels), (h, w), int(num_classes), norm, activation,
                             tuple(int(c) for c in widths), int(hidden), dense_norm, renorm_steps, per=per)  # fmt: skip
        renorm_schedule(renorm_steps)  # checks it
        self.model_spec = spec
        norm, per, activation = spec.norm, spec.per, spec.activation
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        c_in = in_channels
        for i, c in enumerate(spec.widths, start=1):
            layers[f"conv{i}"] = nn.Conv2d(c_in, c, 3, padding=1, bias=norm == "none")
            if norm != "none":
                layers[f"bn{i}"] = _bn2d(norm, per, c, (h, w), renorm_steps)
            layers[f"act{i}"] = _activation(activation)
            layers[f"pool{i}"] = nn.MaxPool2d(2)
            if h < 2 or w < 2:
                raise ValueError(f"image_size {tuple(image_size)} is too small for {len(widths)} pooling stages")
            h, w, c_in = h // 2, w // 2, c
        self.features = nn.Sequential(layers)
        k = len(spec.widths) + 1
        head: OrderedDict[str, nn.Module] = OrderedDict()
        head["flatten"] = nn.Flatten()
        dense_norm = spec.dense_norm
        dense = norm if dense_norm is True else (dense_norm or "none")
        head[f"fc{k}"] = nn.Linear(c_in * h * w, spec.hidden, bias=dense == "none")
        if dense != "none":
            head[f"bn{k}"] = _bn1d(dense, per, spec.hidden, renorm_steps)
        head[f"act{k}"] = _activation(activation)
        head["out"] = nn.Linear(spec.hidden, num_classes)
        self.head = nn.Sequential(head)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class PaperMLP(_Recordable):
    """The network of the paper's Fig. 1: 784-100-100-100-10, sigmoid, BN before each sigmoid (§4.1).

    ``norm`` is ``"batch"`` (default; ``per`` defaults to ``"activation"``, and for a fully connected layer
    ``"channel"`` is the same set B), ``"none"``, or another member of :data:`NORMS`. Weights start as small
    Gaussians, N(0, 1/fan_in), as the paper says "small random Gaussian values" without giving the scale.
    """

    def __init__(
        self,
        in_features: int = 784,
        num_classes: int = 10,
        norm: str = "batch",
        hidden: Sequence[int] = (100, 100, 100),
        activation: str = "sigmoid",
        *,
        per: str | None = None,
    ) -> None:
        super().__init__()
        spec = ModelSpec.mlp(int(in_features), int(num_classes), norm, tuple(int(n) for n in hidden), activation,
                             per=per)  # fmt: skip
        if spec.norm == "renorm":
            raise ValueError("norm 'renorm' is for the CNN (SmallCNN); PaperMLP takes 'batch', 'layer', 'instance', "
                             "'group' or 'none'")  # fmt: skip
        self.model_spec = spec
        norm, per = spec.norm, spec.per
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        layers["flatten"] = nn.Flatten()
        n_in = in_features
        for i, n in enumerate(spec.hidden, start=1):
            layers[f"fc{i}"] = nn.Linear(n_in, n, bias=norm == "none")
            if norm != "none":
                layers[f"bn{i}"] = _bn1d(norm, per, n)
            layers[f"act{i}"] = _activation(spec.activation)
            n_in = n
        layers["out"] = nn.Linear(n_in, num_classes)
        self.layers = nn.Sequential(layers)
        with torch.no_grad():
            for m in self.modules():
                if isinstance(m, nn.Linear):
                    m.weight.normal_(0.0, m.in_features**-0.5)
                    if m.bias is not None:
                        m.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


def build_model(spec: ModelSpec | dict) -> nn.Module:
    """Build a model from its :class:`~bnlab.spec.ModelSpec`, or from the plain dict stored in checkpoints
    (``model.spec``; a dict written before the one vocabulary, ``norm="channel"``, is read too)."""
    s = spec if isinstance(spec, ModelSpec) else ModelSpec.from_dict(spec)
    if s.arch == "cnn":
        return SmallCNN(s.in_channels, s.image_size, s.num_classes, s.norm, s.activation, s.widths, s.hidden,
                        s.dense_norm, s.renorm_steps, per=s.per)  # fmt: skip
    return PaperMLP(s.in_features, s.num_classes, s.norm, s.hidden, s.activation, per=s.per)


def model_spec(model: nn.Module) -> dict:
    """The plain dict :func:`build_model` rebuilds ``model`` from."""
    return dict(model.spec)


def bn_layers(model: nn.Module) -> list[tuple[str, bnn._BatchNorm]]:
    """``(name, module)`` of every bnlab BN layer, in order."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, bnn._BatchNorm)]


_FAMILY_TYPES = (bnn.LayerNorm, bnn.GroupNorm, bnn.InstanceNorm2d)


def count_parameters(model: nn.Module) -> dict[str, int]:
    """Trainable parameter counts: ``total``, ``bn`` (γ and β of every normalization layer) and ``other``."""
    norms = [m for _, m in bn_layers(model)] + [m for m in model.modules() if isinstance(m, _FAMILY_TYPES)]
    bn = sum(p.numel() for m in norms for p in m.parameters(recurse=False))
    total = sum(p.numel() for p in model.parameters())
    return {"total": total, "bn": bn, "other": total - bn}


class UnitRecorder:
    """Watches one pre-activation unit: the input of one nonlinearity at one position, across the batch.

    ``layer`` is a name from ``model.pre_activation_layers()`` (default: the last one, as the paper shows
    "a typical activation from the last hidden layer"); ``unit`` indexes the per-example feature shape:
    an int for a linear layer, ``(c, h, w)`` for a conv map (an int there is taken as channel ``unit`` at
    the centre location). Only training-mode forwards are recorded, unless ``record_eval=True``.

    ``values`` holds the last batch of that unit's values (a 1-D float tensor of length m) and
    ``percentiles(q)`` gives their q-th percentiles, with NumPy's default (linear) interpolation.
    Use as a context manager or call :meth:`close` to remove the hook.
    """

    def __init__(self, model: nn.Module, layer: str | None = None, unit=0, record_eval: bool = False) -> None:
        names = model.pre_activation_layers()
        layer = names[-1] if layer is None else layer
        if layer not in names:
            raise ValueError(f"unknown pre-activation layer {layer!r}; expected one of {', '.join(names)}")
        self.layer = layer
        self.unit = unit
        self.record_eval = record_eval
        self.values: torch.Tensor | None = None
        module = dict(model.named_modules())[layer]
        self._handle = module.register_forward_pre_hook(self._hook)

    def _index(self, x: torch.Tensor) -> tuple:
        unit = self.unit
        if x.dim() == 2:
            return (slice(None), int(unit))
        if isinstance(unit, int):
            unit = (unit, *(s // 2 for s in x.shape[2:]))
        if len(unit) != x.dim() - 1:
            raise ValueError(f"unit {self.unit!r} does not index a feature of shape {tuple(x.shape[1:])}")
        return (slice(None), *unit)

    def _hook(self, module: nn.Module, args) -> None:
        if module.training or self.record_eval:
            x = args[0]
            self.values = x[self._index(x)].detach().float().clone()

    def percentiles(self, q: Sequence[float] = (15, 50, 85)) -> list[float]:
        if self.values is None:
            raise RuntimeError("nothing recorded yet: run a forward pass in training mode first")
        qs = torch.tensor([float(v) / 100 for v in q], dtype=torch.float64)
        return [float(v) for v in torch.quantile(self.values.double(), qs)]

    def close(self) -> None:
        self._handle.remove()

    def __enter__(self) -> UnitRecorder:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
