"""The names bnlab accepts, in one place: the ``bnlab`` parser and the library both import them from here.

Standard library only (it imports nothing when imported), so building the command-line parser imports no torch.
"""

from __future__ import annotations

__all__ = ["DATASETS", "ARCHS", "NORMS", "BATCH_NORMS", "FAMILY_NORMS", "RENORM_NORMS", "LEGACY_NORMS",
           "ACTIVATIONS", "OPTIMIZERS", "FAMILY", "PER", "SPLITS", "DEFAULT_THREADS"]  # fmt: skip
__all__ += ["LANGS"]  # noqa: F822  (given by __getattr__ below, from the catalogs)

#: Names accepted by :func:`bnlab.data.load_dataset`.
DATASETS = ("digits", "mnist", "cifar10")
#: Networks of :func:`bnlab.models.build_model`: a small CNN, or the paper's Fig. 1 MLP.
ARCHS = ("cnn", "mlp")
#: The normalization of a model, one word for the models, ``bnlab train``, checkpoints and results (see
#: :mod:`bnlab.vocabulary`): batch normalization, Batch Renormalization, the members whose set B stays within
#: one sample, or none. ``batch`` and ``renorm`` pool the mini-batch, per channel or per activation (:data:`PER`).
NORMS = ("batch", "renorm", "layer", "instance", "group", "none")
#: The normalizations whose set B spans the mini-batch: the ones :data:`PER` applies to.
BATCH_NORMS = ("batch", "renorm")
#: The rest of the normalization family (sets within one sample).
FAMILY_NORMS = ("layer", "instance", "group")
#: Batch Renormalization (Ioffe 2017), a member of the batch set.
RENORM_NORMS = ("renorm",)
#: Old spellings of a norm, still read from saved files and scripts: ``channel`` is ``batch`` per channel,
#: ``activation`` is ``batch`` per activation (:func:`bnlab.vocabulary.parse_norm`).
LEGACY_NORMS = ("channel", "activation")
#: Nonlinearities of the models.
ACTIVATIONS = ("relu", "sigmoid")
#: Optimizers of :class:`bnlab.training.TrainConfig`.
OPTIMIZERS = ("sgd", "momentum", "adam")
#: The members of the normalization family, by the set B each one normalizes over (:mod:`bnlab.axes`).
FAMILY = ("batch", "layer", "instance", "group")
#: Batch normalization per channel (convolutional) or per activation.
PER = ("channel", "activation")
#: Splits of a :class:`bnlab.data.Dataset`.
SPLITS = ("test", "val", "train")
#: Torch threads of every ``bnlab`` command that trains or evaluates (``--threads``): the networks bnlab
#: trains are small, and a second thread costs more in synchronisation than it saves (see ``bnlab demo --help``).
DEFAULT_THREADS = 1


def __getattr__(name: str):
    # LANGS, the languages of messages and reports: those the catalogs have (bnlab.i18n.languages(): en, es,
    # and any language added with one catalog per domain), read when asked for, so write ``choices.LANGS``
    # where it is used rather than copying it at import time
    if name == "LANGS":
        from .i18n import languages

        return languages()
    raise AttributeError(f"module 'bnlab.choices' has no attribute {name!r}")
