"""Old private name of :mod:`bnlab.inference.layers` (kept so that old importers keep working)."""

from .layers import *  # noqa: F403
from .layers import __all__  # noqa: F401
