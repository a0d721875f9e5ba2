"""``bnlab explain``: which values form one set B for a tensor shape (text, a figure, or the interactive page).

Text and ``--html`` import no torch (and the text no numpy): the answer comes at once.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from ..choices import FAMILY, PER
from .common import UsageError, add_lang, unwritable
from .messages import MSG


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "explain",
        help="which values form one set B for a tensor shape / qué valores forman un conjunto B para una forma",
        description="Say which values share one mean and variance (set B) for a tensor of SHAPE, how many sets\n"
        "there are, how many values each pools, and the γ/β counts of both variants.\n"
        "Dice qué valores comparten una media y una varianza (conjunto B) para un tensor de forma SHAPE,\n"
        "cuántos conjuntos hay, cuántos valores reúne cada uno y cuántos γ/β tiene cada variante.",
        epilog="Example / Ejemplo:  bnlab explain 32,28,28,16 --layout NHWC --per channel --figure setb.png",
    )
    # "-1,28,28,16" is a (bad) SHAPE, not an option: let argparse take it as a positional
    p._negative_number_matcher = re.compile(r"^-\d[\d,x× ]*$")
    p.add_argument("shape", metavar="SHAPE", nargs="?",
                   help="tensor shape, e.g. 32,28,28,16 / forma del tensor, p. ej. 32,28,28,16")  # fmt: skip
    p.add_argument(
        "--layout",
        default=None,
        help="axis order: NHWC, NCHW, NC, NCL, NLC, NCDHW, NDHWC (default: channels last, NHWC for 4 sizes; the "
        "first line of the output says which was assumed) / orden de los ejes (por defecto, canales al final: NHWC "
        "con 4 tamaños; la primera línea de la salida dice cuál se supuso)",
    )
    p.add_argument("--per", choices=PER, default="channel",
                   help="channel: convolutional BN; activation: per-activation BN (default: channel) / channel: BN "
                   "convolucional; activation: BN por activación")  # fmt: skip
    p.add_argument("--figure", metavar="PNG", type=Path,
                   help="also draw one set B for both variants into this file / dibuja además un conjunto B de "
                   "ambas variantes en este archivo")  # fmt: skip
    p.add_argument("--norm", choices=FAMILY, default="batch",
                   help="member of the family: batch (default), layer, instance, group / miembro de la familia: "
                   "batch (por defecto), layer (por capa), instance (por instancia), group (por grupos)")  # fmt: skip
    p.add_argument("--groups", metavar="G", type=int, default=None,
                   help="number of channel groups for --norm group (a divisor of C) / número de grupos de canales "
                   "para --norm group (un divisor de C)")  # fmt: skip
    p.add_argument("--html", metavar="PAGE.html", type=Path, default=None,
                   help="write the interactive page (one self-contained HTML file, SHAPE optional) / escribe la "
                   "página interactiva (un solo archivo HTML autónomo; SHAPE es opcional)")  # fmt: skip
    p.add_argument("--virtual-batch", metavar="K", type=int, default=None,
                   help="ghost BN: statistics per run of K examples / BN fantasma: estadísticas por tanda de K")
    p.add_argument("--mask-last", metavar="K", type=int, default=None,
                   help="a masked set B: the last K positions of --mask-axis are padding, as mask= of "
                   "bnlab.nn.functional.batch_norm / conjunto B con máscara: las últimas K posiciones de --mask-axis "
                   "son relleno")  # fmt: skip
    p.add_argument("--mask-axis", metavar="AXIS", default=None,
                   help="the axis --mask-last masks, a letter of the layout (default: the last spatial axis, N "
                   "without one) / el eje que enmascara --mask-last (por defecto, el último eje espacial)")  # fmt: skip
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
        raise UsageError(MSG[lang]["bad_shape"].format(shape=text))
    return shape


_FIGURE_FORMATS = ("png", "svg", "pdf", "jpg", "jpeg", "eps", "ps", "tif", "tiff", "webp")


def _check_figure_path(path: Path, lang: str) -> None:
    m = MSG[lang]
    # "" (Path('.')), a folder, or only a suffix such as ".png" (which would write a hidden file)
    if path.name in ("", ".", "..") or path.name.lower().lstrip(".") in _FIGURE_FORMATS:
        raise UsageError(m["figure_empty"])
    suffix = path.suffix.lower().lstrip(".")
    if suffix not in _FIGURE_FORMATS:
        raise UsageError(m["figure_format"].format(path=path, suffix=path.suffix, formats=", ".join(_FIGURE_FORMATS)))
    if not path.parent.exists():
        raise UsageError(m["no_path"].format(flag="--figure", path=path.parent))
    if path.is_dir():
        raise UsageError(m["is_folder"].format(flag="--figure", path=path, example=path / "setb.png"))


def run(args) -> int:
    from ..explain import explain

    lang = args.lang
    if args.html is not None:
        return _write_page(args, lang)
    if args.shape is None:
        raise UsageError(MSG[lang]["bad_shape"].format(shape=""))
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
        print(MSG[lang]["figure_saved"].format(path=args.figure))
    return 0


_PAGE_MSG = {
    "en": "Interactive page written to {path} (open it in a browser)",
    "es": "Página interactiva escrita en {path} (ábrela en un navegador)",
}


def _write_page(args, lang: str) -> int:
    from ..explain_page import write_page

    if not args.html.parent.exists():
        raise UsageError(MSG[lang]["no_path"].format(flag="--html", path=args.html.parent))
    try:
        is_folder = args.html.is_dir()
    except OSError as err:  # e.g. a name too long for the file system
        raise unwritable("--html", args.html, err, lang) from None
    if is_folder:
        raise UsageError(MSG[lang]["is_folder"].format(flag="--html", path=args.html, example=args.html / "setb.html"))
    kwargs = {"layout": args.layout or "NHWC", "norm": args.norm, "per": args.per, "groups": args.groups}
    if args.shape is not None:
        kwargs["shape"] = _parse_shape(args.shape, lang)
    try:
        write_page(args.html, lang=lang, **kwargs)
    except ValueError as err:
        raise UsageError(str(err)) from None
    except OSError as err:  # a folder of that name, a full disk, a name too long, ...
        raise unwritable("--html", args.html, err, lang) from None
    print(_PAGE_MSG[lang].format(path=args.html))
    return 0
