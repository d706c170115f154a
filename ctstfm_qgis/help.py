"""Algorithm help written as readable text, rendered for the dialog and for ``qgis_process``.

The source is plain text with a little markup:

- paragraphs are separated by blank lines, and may be wrapped freely;
- ``## Title`` is a heading;
- lines starting with ``- `` are list items (continuation lines are indented);
- lines starting with ``$ `` are commands, shown in a fixed-width font;
- ``**bold**``, ``*italic*`` and ```code``` inline; ``&``, ``<`` and ``>`` are written as they are.

:func:`help_html` gives HTML with **no line breaks at all**: QGIS's dialog splits the help
string at every ``\\n`` and wraps each piece in ``<p>`` (``QgsProcessingAlgorithmDialogBase::formatHelp``),
which is what broke sentences apart before. ``qgis_process help`` prints the string as it is,
so there :func:`help_text` gives wrapped plain text instead.
"""

import html
import re
import textwrap
from dataclasses import dataclass, field
from typing import List

_INLINE = [
    (re.compile(r"`([^`]+)`"), "tt"),
    (re.compile(r"\*\*([^*]+)\*\*"), "b"),
    (re.compile(r"\*([^*\s][^*]*)\*"), "i"),
]
TEXT_WIDTH = 100


@dataclass
class Block:
    kind: str  # "p", "h", "ul" or "code"
    lines: List[str] = field(default_factory=list)  # "ul": one entry per item


def parse(source):
    """The blocks of a help source (see the module's docstring)."""
    blocks = []
    for chunk in re.split(r"\n\s*\n", textwrap.dedent(source).strip()):
        lines = [line.rstrip() for line in chunk.splitlines() if line.strip()]
        if lines[0].startswith("## "):
            blocks.append(Block("h", [lines.pop(0)[3:].strip()]))
        if not lines:
            continue
        if lines[0].startswith("- "):
            items = []
            for line in lines:
                if line.startswith("- "):
                    items.append(line[2:].strip())
                else:
                    items[-1] += " " + line.strip()
            blocks.append(Block("ul", items))
        elif lines[0].startswith("$ "):
            blocks.append(Block("code", [line.strip()[2:] for line in lines]))
        else:
            blocks.append(Block("p", [" ".join(line.strip() for line in lines)]))
    return blocks


def _inline_html(text):
    text = html.escape(text, quote=False)
    for pattern, tag in _INLINE:
        text = pattern.sub(rf"<{tag}>\1</{tag}>", text)
    return text


def _inline_plain(text):
    for pattern, _ in _INLINE:
        text = pattern.sub(r"\1", text)
    return text


def help_html(source):
    """One line of HTML: paragraphs, ``<h3>`` headings, ``<ul>`` lists and commands in ``<tt>``."""
    parts = []
    for block in parse(source):
        if block.kind == "h":
            parts.append(f"<h3>{_inline_html(block.lines[0])}</h3>")
        elif block.kind == "ul":
            parts.append("<ul>" + "".join(f"<li>{_inline_html(item)}</li>" for item in block.lines) + "</ul>")
        elif block.kind == "code":
            parts.append("<p>" + "<br>".join(f"<tt>{html.escape(line)}</tt>" for line in block.lines) + "</p>")
        else:
            parts.append(f"<p>{_inline_html(block.lines[0])}</p>")
    return "".join(parts)


def help_text(source, width=TEXT_WIDTH):
    """Plain text for a terminal: wrapped paragraphs, underlined headings, ``-`` lists, indented commands."""
    parts = []
    for block in parse(source):
        if block.kind == "h":
            title = _inline_plain(block.lines[0])
            parts.append(f"{title}\n{'-' * len(title)}")
        elif block.kind == "ul":
            parts.append(
                "\n".join(
                    textwrap.fill(_inline_plain(item), width, initial_indent="- ", subsequent_indent="  ")
                    for item in block.lines
                )
            )
        elif block.kind == "code":
            parts.append("\n".join("    " + line for line in block.lines))
        else:
            parts.append(textwrap.fill(_inline_plain(block.lines[0]), width))
    return "\n\n".join(parts)


def is_command_line():
    """True inside ``qgis_process``, which prints help strings as they are."""
    from qgis.core import QgsApplication

    return QgsApplication.platform() == "qgis_process"


def render_help(source):
    """The help string QGIS should get: plain text under ``qgis_process``, else one-line HTML."""
    return help_text(source) if is_command_line() else help_html(source)
