"""One vocabulary for normalization: ``norm`` × ``per``, and the one function that reads the old spellings.

A model's normalization is a pair of words, the same in the models, ``bnlab train``, checkpoints and results:

- ``norm`` in :data:`bnlab.choices.NORMS`: ``batch`` (batch normalization), ``renorm`` (Batch Renormalization,
  a member of the batch set), ``layer``, ``instance``, ``group`` (sets within one sample) or ``none``;
- ``per`` in :data:`bnlab.choices.PER`, for ``batch`` and ``renorm`` only (their set B spans the mini-batch):
  ``channel`` (convolutional BN, §3.2: one statistic per feature map) or ``activation`` (§3: one per
  activation). For the other norms ``per`` is ``None``.

Before this vocabulary, ``--norm`` took ``channel`` and ``activation`` for batch normalization, and the
small-batch study named its ablations ``channel-conv`` (BN in the conv blocks only) and ``channel-ln``
(layer norm after the dense layer). Those words are still read where a saved file or a script has them,
by :func:`parse_norm`, and they are the *labels* of the runs of a study (the keys of ``results.json`` and
of the reports): :attr:`Norm.label` writes them back.

>>> parse_norm("channel")
Norm(norm='batch', per='channel', dense_norm=True)
>>> parse_norm("batch", "activation").label
'activation'
>>> parse_norm("channel-ln")
Norm(norm='batch', per='channel', dense_norm='layer')
>>> parse_norm("layer").per is None
True

Standard library only: the command-line parser reads it without importing torch.
"""

from __future__ import annotations

from dataclasses import dataclass

from .choices import BATCH_NORMS, LEGACY_NORMS, NORMS, PER

__all__ = ["Norm", "parse_norm", "LEGACY_SPELLINGS", "DENSE_SUFFIXES"]

#: Each old spelling of a norm and the pair it stands for.
LEGACY_SPELLINGS = {"channel": ("batch", "channel"), "activation": ("batch", "activation")}
assert tuple(LEGACY_SPELLINGS) == LEGACY_NORMS
#: Suffixes of a run label that name the small-batch ablations of the dense layer's normalization:
#: ``-conv`` none there (the normalization in the conv blocks only), ``-ln`` layer norm there.
DENSE_SUFFIXES = {"-conv": False, "-ln": "layer"}


@dataclass(frozen=True)
class Norm:
    """A normalization in the one vocabulary: ``norm``, ``per`` (None outside :data:`~bnlab.choices.BATCH_NORMS`)
    and ``dense_norm`` (the small CNN's head: ``True`` the same as ``norm``, ``False`` none, ``"layer"``
    layer norm). Build it with :func:`parse_norm`, which checks the words."""

    norm: str
    per: str | None = None
    dense_norm: bool | str = True

    @property
    def label(self) -> str:
        """The run's short name in results and reports (the old spelling where there is one):
        ``channel``, ``activation``, ``renorm``, ``renorm-activation``, ``layer``, …, plus ``-conv``/``-ln``."""
        if self.norm == "batch":
            base = self.per
        elif self.norm == "renorm":
            base = "renorm" if self.per == "channel" else f"renorm-{self.per}"
        else:
            base = self.norm
        if self.dense_norm is True:
            return base
        return base + ("-conv" if self.dense_norm is False else "-ln")


def _choices(words) -> str:
    return ", ".join(map(repr, words))


def parse_norm(word, per: str | None = None, *, default_per: str = "channel", dense_norm=True) -> Norm:
    """The :class:`Norm` that ``word`` (a norm, an old spelling or a run label) and ``per`` name.

    ``per``: for ``batch``/``renorm`` (``None``: ``default_per``); given with another norm, or against
    what an old spelling says (``"activation"`` with ``per="channel"``), it is an error. ``dense_norm``:
    the head's normalization, unless the label's suffix says it (``channel-conv``, ``channel-ln``).
    Raises ValueError naming the accepted words.
    """
    if not isinstance(word, str):
        raise ValueError(f"norm must be a string, one of {_choices(NORMS)}; got {word!r}")
    if per is not None and per not in PER:
        raise ValueError(f"unknown per {per!r}; expected one of {_choices(PER)}")
    if default_per not in PER:
        raise ValueError(f"unknown default_per {default_per!r}; expected one of {_choices(PER)}")
    if not (isinstance(dense_norm, bool) or dense_norm == "layer"):
        raise ValueError(f"dense_norm must be True, False or 'layer', got {dense_norm!r}")
    base = word
    for suffix, dense in DENSE_SUFFIXES.items():
        if word.endswith(suffix) and word[: -len(suffix)] in (*NORMS, *LEGACY_NORMS, "renorm-activation"):
            if dense_norm is not True:
                raise ValueError(f"{word!r} already says dense_norm={dense!r}; do not give dense_norm={dense_norm!r}")
            base, dense_norm = word[: -len(suffix)], dense
            break
    said_per = None
    if base in LEGACY_SPELLINGS:
        base, said_per = LEGACY_SPELLINGS[base]
    elif base == "renorm-activation":
        base, said_per = "renorm", "activation"
    if base not in NORMS:
        raise ValueError(
            f"unknown norm {word!r}; expected one of {_choices(NORMS)} (with per in {_choices(PER)} for "
            f"{_choices(BATCH_NORMS)}), or an old spelling: {_choices(LEGACY_NORMS)}"
        )
    if said_per is not None and per is not None and per != said_per:
        raise ValueError(f"norm {word!r} means per={said_per!r}; it cannot be combined with per={per!r}")
    if base not in BATCH_NORMS:
        if per is not None:
            raise ValueError(f"per applies to {_choices(BATCH_NORMS)} only (their sets span the mini-batch); "
                             f"norm {word!r} takes no per")  # fmt: skip
        return Norm(base, None, dense_norm)
    return Norm(base, said_per or per or default_per, dense_norm)
