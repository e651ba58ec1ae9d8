"""Team write-ups: a short Markdown note each team attaches to its final submission.

Rules (the boards and every refusal state them):

* accepted from the host-set time (``init --writeups-open``, ``writeups-open WHEN``), else
  from ``close``; before that every route refuses with the time it opens (CLI exit code 5);
* at most :data:`MAX_WRITEUP_BYTES` bytes of UTF-8 after cleaning; empty ones are refused;
* cleaning: NFC, newlines unified, tabs to spaces, control and invisible format characters
  (bidi overrides such as U+202E, zero-width spaces, BOMs) removed, so what is shown is what
  was typed;
* shown rendered (:func:`leaderboard.markdown.render_markdown`) on the private board and
  in the booklet, as a one-line title in the terminal and in CSV exports;
* a team may replace its write-up; every version is kept (the ``writeups`` table is
  append-only) and the latest one is shown.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from datetime import datetime
from typing import Any

from .errors import InvalidWriteup, WriteupsNotOpen
from .rules import iso, parse_time, short_time

#: The cap on a write-up, in bytes of UTF-8 (8 kB: about two printed pages of notes).
MAX_WRITEUP_BYTES = 8 * 1024
#: How much raw input is read at all before it is refused unread.
MAX_RAW_BYTES = 16 * MAX_WRITEUP_BYTES
TITLE_CHARS = 60

_LINK = re.compile(r"\[([^\[\]]*)\]\([^()\s]*\)")
_DROP = ("Cc", "Cf", "Cs")  # controls, invisible format characters, lone surrogates


def clean_writeup(text: Any) -> str:
    """The write-up as it will be stored; InvalidWriteup (nothing saved) when it cannot be."""
    if isinstance(text, (bytes, bytearray)):
        if len(text) > MAX_RAW_BYTES:
            raise InvalidWriteup(_too_long(len(text)))
        try:
            text = bytes(text).decode("utf-8-sig")
        except UnicodeDecodeError:
            raise InvalidWriteup("the write-up is not UTF-8 text (save it as UTF-8 Markdown); "
                                 "nothing was saved") from None
    if not isinstance(text, str):
        raise InvalidWriteup("the write-up must be text (Markdown)")
    if len(text) > MAX_RAW_BYTES:
        raise InvalidWriteup(_too_long(len(text.encode("utf-8", "replace"))))
    text = unicodedata.normalize("NFC", text).replace("\r\n", "\n").replace("\r", "\n")
    text = text.replace("\u2028", "\n").replace("\u2029", "\n\n").replace("\t", "    ")
    text = "".join(c for c in text if c == "\n" or unicodedata.category(c) not in _DROP)
    text = "\n".join(line.rstrip() for line in text.split("\n")).strip("\n")
    if not text.strip():
        raise InvalidWriteup("the write-up is empty; nothing was saved")
    n = len(text.encode("utf-8"))
    if n > MAX_WRITEUP_BYTES:
        raise InvalidWriteup(_too_long(n))
    return text


def _too_long(n: int) -> str:
    return (f"the write-up is {n:,} bytes; the limit is {MAX_WRITEUP_BYTES:,} bytes "
            f"({MAX_WRITEUP_BYTES // 1024} kB of UTF-8, about {MAX_WRITEUP_BYTES // 3:,} Japanese or "
            f"{MAX_WRITEUP_BYTES:,} English characters): shorten it or link to the rest; nothing was saved")


def writeup_sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def title(text: str | None, limit: int = TITLE_CHARS) -> str:
    """The first non-empty line without Markdown markers: a one-line label for terminals and CSV."""
    for line in (text or "").split("\n"):
        if line.strip().startswith(("```", "~~~")):
            continue
        line = line.strip().lstrip("#>").strip()
        if line.startswith(("- ", "* ", "+ ")):
            line = line[2:].strip()
        line = _LINK.sub(r"\1", line).replace("**", "").replace("__", "").replace("`", "").strip()
        if line:
            line = "".join(c if c.isprintable() else " " for c in line)
            return line if len(line) <= limit else line[: limit - 1] + "…"
    return ""


def opens_at(meta: dict[str, str]) -> str:
    """The ISO time write-ups open ("" = when the host closes the competition)."""
    return meta.get("writeups_open") or ""


def are_open(meta: dict[str, str], now: datetime) -> bool:
    at = opens_at(meta)
    if at:
        return now >= parse_time(at)
    return bool(meta.get("closed_at"))


def check_open(meta: dict[str, str], now: datetime) -> None:
    """WriteupsNotOpen, saying when they open, unless write-ups are accepted now."""
    if are_open(meta, now):
        return
    at = opens_at(meta)
    if not at:
        raise WriteupsNotOpen("write-ups are not open yet: they open when the host closes the competition "
                              "(the host may set an earlier time); nothing was saved")
    left = int((parse_time(at) - now).total_seconds())
    days, rem = divmod(max(0, left), 86400)
    wait = (f"{days}d " if days else "") + f"{rem // 3600}h {rem % 3600 // 60:02d}m"
    raise WriteupsNotOpen(f"write-ups are not open yet: they open at {short_time(at)} (in {wait}); "
                          "nothing was saved", opens_at=iso(parse_time(at)))


def opens_text(meta: dict[str, str], now: datetime) -> str:
    """A sentence for pages: when write-ups open, or that they are open."""
    if are_open(meta, now):
        return "Write-ups are open: each team may attach a short Markdown write-up to its final submission."
    at = opens_at(meta)
    return f"Write-ups open at {short_time(at)}." if at else "Write-ups open when the host closes the competition."
