"""The demo report: train the same CNN without BN, with BN per activation and per channel, and explain it.

- :func:`run_demo` (``bnlab demo``): trains, measures, and writes ``DIR/index.html`` with its figures and
  ``results.json``, in English or Spanish;
- :func:`run_paper_fig1` (``bnlab experiment paper-fig1``): the paper's Fig. 1 experiment on MNIST;
- :func:`run_small_batch` (``bnlab experiment small-batch``): accuracy vs mini-batch size m, without BN, per
  activation and per channel, on 28×28 MNIST.
"""

from .demo import SETTINGS, Setting, run_demo
from .paper_fig1 import run_paper_fig1
from .small_batch import run_small_batch

__all__ = ["run_demo", "run_paper_fig1", "run_small_batch", "Setting", "SETTINGS"]
