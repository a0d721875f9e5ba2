"""The demo report: train the same CNN without BN, with BN per activation and per channel, and explain it.

- :func:`run_demo` (``bnlab demo``): trains, measures, and writes ``DIR/index.html`` with its figures and
  ``results.json``, in English or Spanish;
- :func:`run_paper_fig1` (``bnlab experiment paper-fig1``): the paper's Fig. 1 experiment on MNIST.
"""

from .demo import SETTINGS, Setting, run_demo
from .paper_fig1 import run_paper_fig1

__all__ = ["run_demo", "run_paper_fig1", "Setting", "SETTINGS"]
