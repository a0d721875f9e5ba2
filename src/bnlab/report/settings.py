"""The demo's training settings (optimizer, activation, learning rate), shared by the run and its figures."""

from __future__ import annotations

from dataclasses import dataclass

from ..i18n import t
from ..i18n.numbers import general

__all__ = ["Setting", "SETTINGS"]


@dataclass(frozen=True)
class Setting:
    """One training setting; ``key`` names its strings (``setting_<key>``) and figure files."""

    key: str
    activation: str
    optimizer: str
    lr: float

    def title(self, lang: str) -> str:
        return t(f"report.setting_{self.key}", lang, lr=general(self.lr, lang))

    def why(self, lang: str) -> str:
        return t(f"report.setting_{self.key}_why", lang)


SETTINGS = (
    Setting("adam", "relu", "adam", 0.003),
    Setting("high_lr", "relu", "sgd", 1.0),
    Setting("sigmoid", "sigmoid", "sgd", 0.5),
)
