"""A small, safe Markdown subset for team write-ups: no raw HTML, no scripts, http(s) links only.

Every piece of the participant's text is HTML-escaped *before* any markup is produced, so
the only tags in the output are the ones made here: ``h3``-``h6`` (a write-up's ``#`` sits
below the page's own headings), ``p``, ``ul``/``ol``/``li``, ``pre``/``code``, ``strong``,
``em`` and ``a href="http(s)://..." rel="noopener noreferrer nofollow"``. Anything else
(raw HTML, images, ``javascript:`` or ``data:`` links, tables) stays visible as plain text.

No library is used on purpose: the kit does not declare one, and a subset this small can
be read and tested in full.
"""

from __future__ import annotations

import html
import re
from urllib.parse import urlsplit

from markupsafe import Markup

_FENCE = re.compile(r"^ {0,3}(```|~~~)")
_HEADING = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.*?)(?:[ \t]+#+)?[ \t]*$")
_UL = re.compile(r"^ {0,3}[-*+][ \t]+(.*)$")
_OL = re.compile(r"^ {0,3}(\d{1,9})[.)][ \t]+(.*)$")
_CONTINUATION = re.compile(r"^(?: {2,}|\t)(\S.*)$")

_CODE = re.compile(r"(`+)(.+?)\1")
_LINK = re.compile(r"\[([^\[\]]{1,500})\]\(([^()\s]{1,2000})\)")
_STRONG = re.compile(r"(\*\*|__)(?=\S)(.+?)(?<=\S)\1")
_EM = re.compile(r"(?<![\w*])\*(?=[^\s*])(.+?)(?<=[^\s*])\*(?![\w*])|(?<![\w_])_(?=[^\s_])(.+?)(?<=[^\s_])_(?![\w_])")
_SLOT = re.compile(r"\x00(\d+)\x00")


def _esc(text: str) -> str:
    return html.escape(text, quote=True)


def safe_url(url: str) -> str | None:
    """``url`` when it is an absolute http(s) URL with a host and no quote, space or control
    character (so it cannot leave its attribute or smuggle a scheme); else None."""
    if any(c in url for c in "\"'<>`\\") or any(ord(c) < 33 or ord(c) == 127 for c in url):
        return None
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        return None
    return url


def inline(raw: str) -> str:
    """One line (or paragraph) of raw text -> escaped HTML with code, links and emphasis."""
    slots: list[str] = []

    def keep(fragment: str) -> str:
        slots.append(fragment)
        return f"\x00{len(slots) - 1}\x00"

    raw = raw.replace("\x00", "")  # the slot marker cannot come from the text
    s = _CODE.sub(lambda m: keep(f"<code>{_esc(m[2].strip())}</code>"), raw)

    def link(m: re.Match) -> str:
        url = safe_url(m[2])
        if url is None:
            return keep(_esc(m[0]))  # shown as typed, not linked
        return keep(f'<a href="{_esc(url)}" rel="noopener noreferrer nofollow">{_emphasis(_esc(m[1]))}</a>')

    s = _LINK.sub(link, s)
    s = _emphasis(_esc(s))
    for _ in range(3):  # a link's text may hold a code slot
        s = _SLOT.sub(lambda m: slots[int(m[1])], s)
    return s


def _emphasis(escaped: str) -> str:
    escaped = _STRONG.sub(lambda m: f"<strong>{m[2]}</strong>", escaped)
    return _EM.sub(lambda m: f"<em>{m[1] or m[2]}</em>", escaped)


def blocks(text: str) -> list[tuple[str, list[str], int]]:
    """The text's blocks: (kind, lines, level/start) with kind in h, p, ul, ol, code."""
    out: list[tuple[str, list[str], int]] = []
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    i = 0
    while i < len(lines):
        line = lines[i]
        if not line.strip():
            i += 1
        elif _FENCE.match(line):
            fence = _FENCE.match(line)[1]
            body, i = [], i + 1
            while i < len(lines) and not lines[i].lstrip().startswith(fence):
                body.append(lines[i])
                i += 1
            out.append(("code", body, 0))
            i += 1
        elif m := _HEADING.match(line):
            out.append(("h", [m[2]], len(m[1])))
            i += 1
        elif _UL.match(line) or _OL.match(line):
            i = _list_block(lines, i, out)
        else:
            para = []
            while i < len(lines) and lines[i].strip() and not _starts_block(lines[i]):
                para.append(lines[i].strip())
                i += 1
            out.append(("p", para, 0))
    return out


def _starts_block(line: str) -> bool:
    return bool(_FENCE.match(line) or _HEADING.match(line) or _UL.match(line) or _OL.match(line))


def _list_block(lines: list[str], i: int, out: list[tuple[str, list[str], int]]) -> int:
    """Consecutive items of one kind (an indented line continues the item); returns the next index."""
    ordered = bool(_OL.match(lines[i]))
    start = int(_OL.match(lines[i])[1]) if ordered else 0
    pattern = _OL if ordered else _UL
    items: list[str] = []
    while i < len(lines):
        m = pattern.match(lines[i])
        if m:
            items.append(m[m.lastindex])
        elif items and (c := _CONTINUATION.match(lines[i])):
            items[-1] += " " + c[1]
        else:
            break
        i += 1
    out.append(("ol" if ordered else "ul", items, start))
    return i


def render_markdown(text: str) -> Markup:
    """The write-up as safe HTML inside ``<div class="writeup" dir="auto">``."""
    parts = []
    for kind, lines, n in blocks(text or ""):
        if kind == "code":
            parts.append(f"<pre><code>{_esc(chr(10).join(lines))}</code></pre>")
        elif kind == "h":
            level = min(6, n + 2)
            parts.append(f"<h{level}>{inline(lines[0])}</h{level}>")
        elif kind in ("ul", "ol"):
            items = "".join(f"<li>{inline(x)}</li>" for x in lines)
            start = f' start="{n}"' if kind == "ol" and n != 1 else ""
            parts.append(f"<{kind}{start}>{items}</{kind}>")
        else:
            parts.append(f"<p>{inline(chr(10).join(lines))}</p>")
    return Markup(f'<div class="writeup" dir="auto">{"".join(parts)}</div>')
