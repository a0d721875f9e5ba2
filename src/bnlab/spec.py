"""What a model of :mod:`bnlab.models` is, as data: :class:`ModelSpec`, the one list of its fields.

The models build from it (:func:`bnlab.models.build_model`), store it (``model.spec``, the plain dict of
:meth:`ModelSpec.to_dict`), training checkpoints carry that dict and check it on load
(:func:`bnlab.training.check_model_spec`, with :meth:`ModelSpec.check_bounds` for a file that may be
hostile), and ``bnlab train`` makes one from its options.

>>> s = ModelSpec.cnn(1, (8, 8), 10, norm="channel")        # an old spelling, read as (batch, channel)
>>> s.norm, s.per, s.to_dict()["norm"]
('batch', 'channel', 'batch')
>>> ModelSpec.from_dict(s.to_dict()) == s
True
>>> ModelSpec.from_dict({"arch": "mlp", "in_features": 784, "num_classes": 10, "norm": "activation",
...                      "activation": "sigmoid", "hidden": [100, 100, 100]}).per   # a checkpoint of bnlab ≤ 0.4
'activation'

Standard library only (the vocabulary and the choices), so it checks a spec without importing torch.
"""

from __future__ import annotations

import dataclasses
import reprlib
from dataclasses import dataclass

from .choices import ACTIVATIONS, ARCHS
from .vocabulary import Norm, parse_norm

__all__ = ["ModelSpec", "SpecError", "SPEC_BOUNDS"]

#: Bounds on a model spec read from a file: generous for this package's models, far below what would
#: exhaust memory (checked by :meth:`ModelSpec.check_bounds`).
SPEC_BOUNDS = {"channels": 4096, "side": 4096, "classes": 100_000, "features": 1 << 24, "layers": 16,
               "steps": 1 << 40}  # fmt: skip

# the fields of each architecture's dict: required, then those written only when not the default
_REQUIRED = {
    "cnn": ("arch", "in_channels", "image_size", "num_classes", "norm", "activation", "widths", "hidden"),
    "mlp": ("arch", "in_features", "num_classes", "norm", "activation", "hidden"),
}
_OPTIONAL = {"cnn": ("per", "dense_norm", "renorm_steps"), "mlp": ("per",)}


class SpecError(ValueError):
    """A model spec that bnlab cannot build: the message names the field at fault."""


def _int(key: str, value, low: int = 1, high: int | None = None) -> int:
    if type(value) is not int or value < low or (high is not None and value > high):
        to = f" to {high}" if high is not None else " or more"
        raise SpecError(f"model_spec[{key!r}] = {reprlib.repr(value)}: expected an integer from {low}{to}")
    return value


def _ints(key: str, value, length: tuple[int, int | None], high: int | None = None) -> tuple[int, ...]:
    lo, hi = length
    if not isinstance(value, (list, tuple)) or len(value) < lo or (hi is not None and len(value) > hi):
        count = f"{lo} to {hi}" if hi is not None else f"{lo} or more"
        raise SpecError(f"model_spec[{key!r}] = {reprlib.repr(value)}: expected a list of {count} integers")
    for v in value:
        if type(v) is not int or v < 1 or (high is not None and v > high):
            to = f"from 1 to {high}" if high is not None else "a positive integer"
            raise SpecError(f"model_spec[{key!r}] = {reprlib.repr(value)}: each entry must be {to}")
    return tuple(value)


@dataclass(frozen=True)
class ModelSpec:
    """A model of :mod:`bnlab.models`: ``arch`` (``cnn``: :class:`~bnlab.models.SmallCNN`; ``mlp``:
    :class:`~bnlab.models.PaperMLP`), its sizes, and its normalization in the one vocabulary
    (:mod:`bnlab.vocabulary`): ``norm``, ``per`` (``batch``/``renorm`` only, else None), ``dense_norm``
    and ``renorm_steps`` (the CNN's ablations and Batch Renorm's schedule). Use :meth:`cnn`/:meth:`mlp`
    (which read the old spellings too) or :meth:`from_dict`; the fields are checked on creation.
    """

    arch: str
    num_classes: int
    norm: str
    per: str | None
    activation: str
    hidden: int | tuple[int, ...]
    in_channels: int | None = None
    image_size: tuple[int, int] | None = None
    widths: tuple[int, ...] | None = None
    in_features: int | None = None
    dense_norm: bool | str = True
    renorm_steps: int | None = None

    @classmethod
    def cnn(cls, in_channels, image_size, num_classes, norm="batch", activation="relu", widths=(16, 32),
            hidden=64, dense_norm=True, renorm_steps=None, *, per=None) -> ModelSpec:  # fmt: skip
        """The spec of ``SmallCNN(...)`` with the same arguments (``norm`` may be an old spelling)."""
        n = parse_norm(norm, per, dense_norm=dense_norm)
        return cls("cnn", num_classes, n.norm, n.per, activation, hidden, in_channels, tuple(image_size),
                   tuple(widths), None, n.dense_norm, renorm_steps)  # fmt: skip

    @classmethod
    def mlp(cls, in_features=784, num_classes=10, norm="batch", hidden=(100, 100, 100), activation="sigmoid", *,
            per=None) -> ModelSpec:  # fmt: skip
        """The spec of ``PaperMLP(...)``; for ``batch`` the default ``per`` is ``activation`` (the paper's §3;
        in a fully connected layer ``channel`` is the same set B)."""
        n = parse_norm(norm, per, default_per="activation")
        return cls("mlp", num_classes, n.norm, n.per, activation, tuple(hidden), None, None, None, in_features)

    def __post_init__(self) -> None:
        if self.arch not in ARCHS:
            raise SpecError(f"model_spec['arch'] = {reprlib.repr(self.arch)}: expected one of {', '.join(ARCHS)}")
        # the words: parse_norm accepts exactly the pairs of the vocabulary (no old spelling here)
        try:
            n = parse_norm(self.norm, self.per, dense_norm=self.dense_norm)
        except ValueError as err:
            raise SpecError(f"model_spec: {err}") from None
        if (n.norm, n.per) != (self.norm, self.per):
            raise SpecError(f"model_spec: norm={self.norm!r}, per={self.per!r} is not in the vocabulary; "
                            f"write norm={n.norm!r}, per={n.per!r}")  # fmt: skip
        if self.activation not in ACTIVATIONS:
            raise SpecError(f"unknown activation {reprlib.repr(self.activation)}; expected one of "
                            f"{', '.join(ACTIVATIONS)}")  # fmt: skip
        _int("num_classes", self.num_classes)
        if self.arch == "cnn":
            _int("in_channels", self.in_channels)
            _ints("image_size", self.image_size, (2, 2))
            _ints("widths", self.widths, (1, None))
            _int("hidden", self.hidden)
            if self.renorm_steps is not None:
                if self.norm != "renorm":
                    raise SpecError(f"renorm_steps is for norm='renorm' only, got norm={self.norm!r}")
                _int("renorm_steps", self.renorm_steps)
        else:
            _int("in_features", self.in_features)
            _ints("hidden", self.hidden, (0, None))
            for key in ("in_channels", "image_size", "widths", "renorm_steps"):
                if getattr(self, key) is not None:
                    raise SpecError(f"model_spec[{key!r}]: an mlp model has no {key}")
            if self.dense_norm is not True:
                raise SpecError("model_spec['dense_norm']: an mlp model has no dense_norm (it is for the cnn's head)")

    @property
    def normalization(self) -> Norm:
        """``norm``, ``per`` and ``dense_norm`` as one :class:`~bnlab.vocabulary.Norm` (its ``label`` names the run)."""
        return Norm(self.norm, self.per, self.dense_norm)

    def to_dict(self) -> dict:
        """The plain dict stored in ``model.spec`` and in checkpoints: the arch's fields, with ``per`` only for
        ``batch``/``renorm`` and ``dense_norm``/``renorm_steps`` only when not the default."""
        out = {}
        for key in _REQUIRED[self.arch]:
            value = getattr(self, key)
            out[key] = list(value) if isinstance(value, tuple) else value
            if key == "norm" and self.per is not None:
                out["per"] = self.per
        if self.dense_norm is not True:
            out["dense_norm"] = self.dense_norm
        if self.renorm_steps is not None:
            out["renorm_steps"] = self.renorm_steps
        return out

    @classmethod
    def from_dict(cls, spec) -> ModelSpec:
        """Read a spec dict (:meth:`to_dict`'s, or one written before the one vocabulary, whose ``norm`` is
        ``channel``/``activation`` and which has no ``per``). Raises :class:`SpecError` naming the field."""
        if not isinstance(spec, dict):
            raise SpecError(f"model_spec is a {type(spec).__name__}, not a dict")
        arch = spec.get("arch")
        if arch not in ARCHS:
            raise SpecError(f"model_spec['arch'] = {reprlib.repr(arch)}: expected one of {', '.join(ARCHS)}")
        required, optional = set(_REQUIRED[arch]), set(_OPTIONAL[arch])
        if not required <= set(spec) <= required | optional:
            raise SpecError(f"model_spec has fields {reprlib.repr(sorted(map(str, spec)))}; a {arch} model has "
                            f"{sorted(required)} and may have {sorted(optional)}")  # fmt: skip
        fields = {k: v for k, v in spec.items() if k not in ("arch", "norm", "per")}
        for key in ("image_size", "widths", "hidden"):
            if isinstance(fields.get(key), list):
                fields[key] = tuple(fields[key])
        if isinstance(spec["norm"], str) and "-" in spec["norm"]:  # a run label (channel-conv) is not a spec word
            raise SpecError(f"model_spec['norm'] = {reprlib.repr(spec['norm'])}: write per and dense_norm instead")
        try:
            n = parse_norm(spec["norm"], spec.get("per"), default_per="channel" if arch == "cnn" else "activation",
                           dense_norm=spec.get("dense_norm", True))  # fmt: skip
        except ValueError as err:
            raise SpecError(f"model_spec['norm'] = {reprlib.repr(spec['norm'])}: {err}") from None
        fields["dense_norm"] = n.dense_norm
        return cls(arch=arch, norm=n.norm, per=n.per, **fields)

    def check_bounds(self) -> ModelSpec:
        """Check the sizes against :data:`SPEC_BOUNDS` (for a spec read from a file); return ``self``."""
        b = SPEC_BOUNDS
        _int("num_classes", self.num_classes, 1, b["classes"])
        if self.arch == "cnn":
            _int("in_channels", self.in_channels, 1, b["channels"])
            _ints("image_size", self.image_size, (2, 2), b["side"])
            _ints("widths", self.widths, (1, 8), b["channels"])
            _int("hidden", self.hidden, 1, b["channels"] * 16)
            if self.renorm_steps is not None:
                _int("renorm_steps", self.renorm_steps, 1, b["steps"])
        else:
            _int("in_features", self.in_features, 1, b["features"])
            _ints("hidden", self.hidden, (0, b["layers"]), b["channels"] * 16)
        return self

    def replace(self, **changes) -> ModelSpec:
        """A copy with ``changes`` (checked again)."""
        return dataclasses.replace(self, **changes)
