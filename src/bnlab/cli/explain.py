"""``bnlab explain``: which values form one set B for a tensor shape (text, a figure, or the interactive page).

Text and ``--html`` import no torch (and the text no numpy): the answer comes at once.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from ..choices import FAMILY, PER
from ..i18n import t
from .common import UsageError, add_lang, both, lines, unwritable


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "explain",
        help=both("cli.help.explain.help"),
        description=lines("cli.help.explain.description"),
        epilog=f"{both('cli.help.explain.example')}:  bnlab explain 32,28,28,16 --layout NHWC --per channel "
        "--figure setb.png",
    )
    # "-1,28,28,16" is a (bad) SHAPE, not an option: let argparse take it as a positional
    p._negative_number_matcher = re.compile(r"^-\d[\d,x× ]*$")
    p.add_argument("shape", metavar="SHAPE", nargs="?", help=both("cli.help.explain.shape"))
    p.add_argument("--layout", default=None, help=both("cli.help.explain.layout"))
    p.add_argument("--per", choices=PER, default="channel", help=both("cli.help.explain.per"))
    p.add_argument("--figure", metavar="PNG", type=Path, help=both("cli.help.explain.figure"))
    p.add_argument("--norm", choices=FAMILY, default="batch", help=both("cli.help.explain.norm"))
    p.add_argument("--groups", metavar="G", type=int, default=None, help=both("cli.help.explain.groups"))
    p.add_argument("--html", metavar="PAGE.html", type=Path, default=None, help=both("cli.help.explain.html"))
    p.add_argument("--virtual-batch", metavar="K", type=int, default=None,
                   help=both("cli.help.explain.virtual_batch"))  # fmt: skip
    p.add_argument("--mask-last", metavar="K", type=int, default=None, help=both("cli.help.explain.mask_last"))
    p.add_argument("--mask-axis", metavar="AXIS", default=None, help=both("cli.help.explain.mask_axis"))
    add_lang(p)
    return p


# Without --layout: channels last, as bnlab's seed (NHWC); PyTorch's channels-first order is named in the output.
_DEFAULT_LAYOUT = {2: "NC", 3: "NLC", 4: "NHWC", 5: "NDHWC"}
_CHANNELS_FIRST = {3: "NCL", 4: "NCHW", 5: "NCDHW"}


def _assumed_layout(shape: tuple[int, ...], lang: str) -> tuple[str, str]:
    """The layout taken when --layout is not given, and the line that says so (and how to ask for torch's)."""
    from ..i18n import t
    from ..i18n.numbers import integer

    layout = _DEFAULT_LAYOUT.get(len(shape), "NHWC")
    if len(layout) != len(shape):  # a size count no layout has: explain's own message names the fix
        return layout, ""
    line = t("cli.explain_layout_assumed", lang, layout=layout, c=integer(shape[-1], lang))
    other = _CHANNELS_FIRST.get(len(shape))
    if other:
        line += " " + t("cli.explain_layout_other", lang, other=other, c_other=integer(shape[1], lang))
    return layout, line


def _parse_shape(text: str, lang: str) -> tuple[int, ...]:
    parts = [p for p in text.replace("x", ",").replace("×", ",").replace(" ", ",").split(",") if p]
    try:
        shape = tuple(int(p) for p in parts)
    except ValueError:
        shape = ()
    if not shape or any(n < 1 for n in shape):
        raise UsageError(t("cli.bad_shape", lang, shape=repr(text)))
    return shape


_FIGURE_FORMATS = ("png", "svg", "pdf", "jpg", "jpeg", "eps", "ps", "tif", "tiff", "webp")


def _check_figure_path(path: Path, lang: str) -> None:
    # "" (Path('.')), a folder, or only a suffix such as ".png" (which would write a hidden file)
    if path.name in ("", ".", "..") or path.name.lower().lstrip(".") in _FIGURE_FORMATS:
        raise UsageError(t("cli.figure_empty", lang))
    suffix = path.suffix.lower().lstrip(".")
    if suffix not in _FIGURE_FORMATS:
        formats = ", ".join(_FIGURE_FORMATS)
        raise UsageError(t("cli.figure_format", lang, path=path, suffix=repr(path.suffix), formats=formats))
    if not path.parent.exists():
        raise UsageError(t("cli.no_path", lang, flag="--figure", path=path.parent))
    if path.is_dir():
        raise UsageError(t("cli.is_folder", lang, flag="--figure", path=path, example=path / "setb.png"))


def run(args) -> int:
    from ..explain import explain

    lang = args.lang
    if args.html is not None:
        return _write_page(args, lang)
    if args.shape is None:
        raise UsageError(t("cli.bad_shape", lang, shape=repr("")))
    shape = _parse_shape(args.shape, lang)
    if args.figure is not None:  # check before printing anything
        try:
            _check_figure_path(args.figure, lang)
        except OSError as err:  # e.g. a name too long for the file system
            raise unwritable("--figure", args.figure, err, lang) from None
    layout, assumed = (args.layout, "") if args.layout is not None else _assumed_layout(shape, lang)
    try:
        e = explain(shape, layout=layout, per=args.per, lang=lang, norm=args.norm, groups=args.groups,
                    virtual_batch=args.virtual_batch, mask_last=args.mask_last, mask_axis=args.mask_axis)  # fmt: skip
    except ValueError as err:
        raise UsageError(str(err)) from None
    if assumed:
        from ..explain.text import wrap

        print(wrap(assumed.replace("--layout ", "--layout\u00a0")))  # the option stays with its value
    print(e.text)
    if args.figure is not None:
        try:
            e.save_figure(args.figure)
        except OSError as err:
            raise unwritable("--figure", args.figure, err, lang) from None
        print(t("cli.figure_saved", lang, path=args.figure))
    return 0


def _write_page(args, lang: str) -> int:
    from ..explain_page import write_page

    if not args.html.parent.exists():
        raise UsageError(t("cli.no_path", lang, flag="--html", path=args.html.parent))
    try:
        is_folder = args.html.is_dir()
    except OSError as err:  # e.g. a name too long for the file system
        raise unwritable("--html", args.html, err, lang) from None
    if is_folder:
        raise UsageError(t("cli.is_folder", lang, flag="--html", path=args.html, example=args.html / "setb.html"))
    kwargs = {"layout": args.layout or "NHWC", "norm": args.norm, "per": args.per, "groups": args.groups}
    if args.shape is not None:
        kwargs["shape"] = _parse_shape(args.shape, lang)
    try:
        write_page(args.html, lang=lang, **kwargs)
    except ValueError as err:
        raise UsageError(str(err)) from None
    except OSError as err:  # a folder of that name, a full disk, a name too long, ...
        raise unwritable("--html", args.html, err, lang) from None
    print(t("cli.page_saved", lang, path=args.html))
    return 0
