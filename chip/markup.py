"""Untrusted text (dataset rows, model output, file and run names) written into Markdown reports.

Every report chip writes in Markdown passes such text through `escape_markdown`, so a ``<script>``
tag, a Markdown link or a ``|`` shows as the characters it is and never becomes markup.
"""

from __future__ import annotations

import re

# Characters that Markdown or inline HTML would read as syntax, anywhere in a line.
_MARKDOWN_SYNTAX = re.compile(r"([\\`*_\[\]{}()<>&|!~#])")
_BUT_UNDERSCORE = re.compile(r"([\\`*\[\]{}()<>&|!~#])")


def escape_markdown(text: str, underscores: bool = True) -> str:
    """`text` as literal Markdown on one line: syntax characters backslash-escaped, line breaks spaced.

    ``underscores=False`` leaves ``_`` as it is, for names such as ``chair_i`` that stay readable in
    the raw file (an underscore can only emphasise; it opens no link, tag or code).
    """
    syntax = _MARKDOWN_SYNTAX if underscores else _BUT_UNDERSCORE
    return syntax.sub(r"\\\1", re.sub(r"\s+", " ", text))
