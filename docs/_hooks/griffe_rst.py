"""A Griffe extension for the API reference: bnlab's docstrings are written in reStructuredText habits
(Sphinx roles, ``::`` literal blocks, doctests), which Markdown would show literally or as quotes.
This rewrites, for the site only, each docstring into the Markdown that shows the same thing:

- :func:`x` (and :mod:, :class:, :meth:, :attr:, :data:, :exc:, :obj:) -> `x`;
- a paragraph ending in ``::`` followed by an indented block -> the paragraph and a fenced text block;
- doctest lines (``>>>`` and ``...`` with their output, up to a blank line) -> a fenced pycon block.

The source files are not changed.
"""

from __future__ import annotations

import re
import textwrap

import griffe

_ROLE = re.compile(r":(?:func|mod|class|meth|attr|data|exc|obj):`~?([^`]+)`")


def rst_to_markdown(text: str) -> str:
    """The docstring ``text`` (already dedented) in Markdown."""
    text = _ROLE.sub(r"`\1`", text)
    lines = text.splitlines()
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.lstrip().startswith(">>>") and (not out or not out[-1].startswith("```")):
            indent = line[: len(line) - len(line.lstrip())]
            block = []
            while i < len(lines) and lines[i].strip():
                block.append(lines[i][len(indent) :] if lines[i].startswith(indent) else lines[i].strip())
                i += 1
            out += [indent + "```pycon", *(indent + b for b in block), indent + "```"]
            continue
        if line.rstrip().endswith("::") and i + 1 < len(lines) and not lines[i + 1].strip():
            base = len(line) - len(line.lstrip())
            j = i + 1
            while j < len(lines) and not lines[j].strip():
                j += 1
            block_start = j
            while j < len(lines) and (not lines[j].strip() or len(lines[j]) - len(lines[j].lstrip()) > base):
                j += 1
            while j > block_start and not lines[j - 1].strip():
                j -= 1
            if j > block_start:
                head = line.rstrip()[:-1]  # "text::" -> "text:"; a lone "::" disappears
                if head.strip() != ":":
                    out.append(head)
                body = textwrap.dedent("\n".join(lines[block_start:j])).splitlines()
                pad = " " * base
                out += ["", pad + "```text", *(pad + b if b else b for b in body), pad + "```"]
                i = j
                continue
        out.append(line)
        i += 1
    return "\n".join(out)


class RstToMarkdown(griffe.Extension):
    """Rewrite every loaded docstring with :func:`rst_to_markdown`."""

    def on_instance(self, *, obj: griffe.Object, **kwargs) -> None:
        if obj.docstring is not None:
            obj.docstring.value = rst_to_markdown(obj.docstring.value)
