"""The submission format, its writer, reader and strict validator (no torch, no pandas needed).

A submission is a UTF-8 CSV file::

    gid,cite_gid
    1000289808,1000713361 1000014572 ... (exactly 20 cite gids, single spaces)

* the header is exactly ``gid,cite_gid``;
* every test gid (``test.csv``) appears exactly once, and no other gid;
* ``cite_gid`` holds exactly 20 distinct gids from ``cite_v2.csv``, separated by single spaces.

:func:`validate_submission` checks all of this and returns **every** problem at once, each
with its line number in the file (line 1 is the header, as in a spreadsheet). The leaderboard,
the command line and the notebooks all call it, so a local check gives exactly the verdict
the leaderboard will give. It never looks at answers, so its messages cannot leak any.

Typical use::

    from tmr_lib.submission import write_submission, check_submission
    write_submission({"1000289808": top20_ids, ...}, "submission.csv")
    check_submission("submission.csv", "data/tmr-cpu")      # prints the verdict
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import re
import tempfile
from collections import defaultdict
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "N_IDS",
    "HEADER",
    "Problem",
    "ValidationReport",
    "SubmissionError",
    "validate_submission",
    "read_submission",
    "write_submission",
    "submission_bytes",
    "check_submission",
    "load_gids",
    "size_limit",
]

N_IDS = 20
HEADER = ("gid", "cite_gid")
MiB = 1024 * 1024
#: Size limit when the number of test queries is unknown.
DEFAULT_MAX_BYTES = 64 * MiB
#: How many problems of one kind are listed in full by ``format`` (the count is always exact).
SHOW_PER_KIND = 10
#: How many problems of one kind are kept in memory (the count stays exact).
KEEP_PER_KIND = 1000

_ID_SEPARATORS = re.compile(r"[ \t,;|\u3000\xa0]+")
_BAD_SEPARATOR = re.compile(r"[\t,;|\u3000\xa0]")
_SEPARATOR_NAMES = {"\t": "tab", "\u3000": "full-width space", "\xa0": "non-breaking space"}
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")

#: One problem as a check returns it: (line or None, kind, message[, severity]).
Issue = tuple


def size_limit(n_test: int | None, n_ids: int = N_IDS) -> int:
    """Upload size cap in bytes: generous (4x a normal file, at least 8 MiB), never unbounded."""
    if not n_test:
        return DEFAULT_MAX_BYTES
    typical_row = 12 + n_ids * 12  # gid, comma, 20 ids of ~11 chars with spaces
    return max(8 * MiB, 4 * n_test * typical_row)


def _show(value: str, limit: int = 40) -> str:
    """A value quoted for a message: control characters escaped, long values cut."""
    text = value if len(value) <= limit else value[: limit - 1] + "…"
    return repr(text)


def _plural(n: int, word: str, plural: str | None = None) -> str:
    return f"{n:,} {word if n == 1 else (plural or word + 's')}"


def _mb(n: int) -> str:
    return f"{n / MiB:.1f} MB"


@dataclass(frozen=True)
class Problem:
    """One problem found in a submission file."""

    line: int | None  #: 1-based line in the file (1 = header); None for the whole file
    kind: str  #: machine-readable kind, e.g. ``"wrong_count"``
    message: str  #: human-readable, already includes the line number
    severity: str = "error"  #: ``"error"`` rejects the file, ``"warning"`` does not

    def __str__(self) -> str:
        return self.message


@dataclass
class ValidationReport:
    """The verdict on one file. ``ok`` is True when there is no error (warnings allowed)."""

    problems: list[Problem] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    gids: list[str] = field(default_factory=list)
    ranked: list[list[str]] = field(default_factory=list)
    n_rows: int = 0
    n_bytes: int = 0
    sha256: str = ""
    data: bytes = b""  #: the raw file, for archiving (empty when the file was refused unread)
    source: str = ""

    # -- building -----------------------------------------------------------------------
    def add(self, line: int | None, kind: str, message: str, severity: str = "error") -> None:
        self.counts[kind] += 1
        if self.counts[kind] <= KEEP_PER_KIND:
            self.problems.append(Problem(line, kind, message, severity))

    # -- reading ------------------------------------------------------------------------
    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "warning"]

    @property
    def n_errors(self) -> int:
        kinds = {p.kind for p in self.problems if p.severity == "error"}
        return sum(self.counts[k] for k in kinds)

    @property
    def ok(self) -> bool:
        return not self.errors

    def __bool__(self) -> bool:
        return self.ok

    def as_dict(self) -> dict[str, list[str]]:
        """``{gid: [20 cite gids]}`` in file order (only meaningful when ``ok``)."""
        return dict(zip(self.gids, self.ranked))

    def ranked_for(self, gids: Iterable[str]) -> list[list[str]]:
        """The ranked lists in the order of ``gids`` (e.g. test.csv order)."""
        by_gid = self.as_dict()
        return [by_gid[g] for g in gids]

    def grouped(self, severity: str | None = None) -> list[tuple[str, int, list[Problem]]]:
        """(kind, exact count, kept problems) per kind, in order of first appearance."""
        order: dict[str, list[Problem]] = {}
        for p in self.problems:
            if severity is None or p.severity == severity:
                order.setdefault(p.kind, []).append(p)
        return [(k, self.counts[k], ps) for k, ps in order.items()]

    def format(self, show_per_kind: int = SHOW_PER_KIND) -> str:
        """All problems as text: every kind of problem, with up to ``show_per_kind`` lines each."""
        name = f"{self.source}: " if self.source else ""
        if self.ok:
            head = f"{name}OK: {_plural(self.n_rows, 'row')}, {_plural(N_IDS, 'id')} each"
        else:
            head = f"{name}REJECTED: {_plural(self.n_errors, 'problem')} (nothing was scored)"
        shown: list[Problem] = []
        tails: list[str] = []
        for kind, count, kept in self.grouped():
            shown.extend(kept[:show_per_kind])
            more = count - min(len(kept), show_per_kind)
            if more > 0:
                tails.append(f"  ... and {_plural(more, 'more line')} with the same problem ({kind})")
        # Whole-file problems first, then by line number, then the summaries.
        shown.sort(key=lambda p: (p.line is not None, p.kind == "missing_gid", p.line or 0))
        shown.sort(key=lambda p: p.kind == "missing_gid")
        out = [head]
        out += [f"  {'ERROR' if p.severity == 'error' else 'WARNING'}: {p.message}" for p in shown]
        out += tails
        return "\n".join(out)

    def __str__(self) -> str:
        return self.format()


class SubmissionError(ValueError):
    """A submission that fails validation; ``.report`` holds every problem."""

    def __init__(self, report: ValidationReport):
        self.report = report
        super().__init__(report.format())


# ----------------------------------------------------------------------------------------
# Reading the raw bytes
# ----------------------------------------------------------------------------------------
def _read_source(source: Any, max_bytes: int, report: ValidationReport) -> bytes | None:
    """Raw bytes of ``source`` or None (with a problem added) when it cannot be read."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        report.source = report.source or "upload"
    elif isinstance(source, (str, os.PathLike)):
        path = Path(source)
        report.source = report.source or path.name
        if not path.exists():
            report.add(None, "not_found", f"file not found: {path}")
            return None
        if not path.is_file():
            report.add(None, "not_a_file", f"not a file: {path}")
            return None
        size = path.stat().st_size
        if size > max_bytes:
            report.n_bytes = size
            report.add(None, "too_large", f"file is {_mb(size)}; the limit is {_mb(max_bytes)}")
            return None
        with open(path, "rb") as fh:
            data = fh.read(max_bytes + 1)
    elif hasattr(source, "read"):
        report.source = report.source or str(getattr(source, "name", "") or "upload")
        data = source.read(max_bytes + 1)
        if isinstance(data, str):
            data = data.encode("utf-8")
    else:
        data = submission_bytes(source)
        report.source = report.source or type(source).__name__
    report.n_bytes = len(data)
    if len(data) > max_bytes:
        report.add(None, "too_large", f"file is larger than the limit of {_mb(max_bytes)}")
        return None
    report.data = data
    report.sha256 = hashlib.sha256(data).hexdigest()
    return data


def _looks_utf16(data: bytes) -> bool:
    """Text in UTF-16 without a BOM: NUL bytes in (nearly) every other position of the start."""
    head = data[:4096]
    if len(head) < 4:
        return False
    for zeros in (head[1::2], head[0::2]):  # little-endian, big-endian ASCII text
        if zeros.count(0) >= 0.9 * len(zeros):
            return True
    return False


def check_encoding(data: bytes) -> tuple[list[Issue], str | None]:
    """Problems with the bytes as text (empty, compressed, UTF-16, NUL bytes, not UTF-8) and the text.

    The text is None when the file cannot be read as UTF-8 at all; a BOM is only a warning.
    """
    if not data.strip():
        return [(None, "empty", "file is empty: expected the header 'gid,cite_gid' and one row per test gid")], None
    if data[:2] == b"\x1f\x8b":
        return [(None, "binary", "file is gzip-compressed: upload the plain .csv file")], None
    if data[:4] == b"PK\x03\x04":
        return [(None, "binary", "file is a zip archive (or an Excel .xlsx workbook): upload a plain .csv file")], None
    if data[:2] in (b"\xff\xfe", b"\xfe\xff"):
        return [(None, "encoding", "file is UTF-16 encoded: save it as UTF-8 (CSV UTF-8)")], None
    issues: list[Issue] = []
    if data[:3] == b"\xef\xbb\xbf":
        issues.append((1, "bom", "line 1: the file starts with a UTF-8 byte-order mark (BOM); it was ignored",
                       "warning"))
        data = data[3:]
    nul = data.find(b"\x00")
    if nul >= 0 and _looks_utf16(data):
        issues.append((None, "encoding", "file is UTF-16 encoded (without a byte-order mark): save it as UTF-8 "
                                         "(CSV UTF-8)"))
        return issues, None
    if nul >= 0:
        line = data.count(b"\n", 0, nul) + 1
        issues.append((line, "binary",
                       f"line {line}: binary data (a NUL byte at byte {nul:,}); this is not a CSV text file"))
        return issues, None
    try:
        return issues, data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        issues.append((
            line,
            "encoding",
            f"line {line}: not valid UTF-8 (byte {exc.start:,}); save the file as UTF-8 text "
            "(binary data or another encoding such as Shift_JIS?)",
        ))
        return issues, None


def _split_fields(line: str) -> list[str]:
    if '"' not in line:
        return line.split(",")
    try:
        return next(csv.reader([line], strict=True))
    except (csv.Error, StopIteration):
        return line.split(",")


_SCIENTIFIC = re.compile(r"[+-]?\d+(\.\d+)?[eE][+-]?\d+")
SCIENTIFIC_HINT = (" (a spreadsheet wrote the id in scientific notation and lost digits: format the "
                   "column as text before saving, or write the file from code)")
FULL_WIDTH_HINT = " (the id has full-width digits: write gids with ASCII digits 0-9)"


def _gid_hint(gid: str, test_set: Collection[str]) -> str:
    """Why an unknown gid might be unknown (ids converted to numbers are the usual cause)."""
    if any(c.isdigit() and not c.isascii() for c in gid):
        return FULL_WIDTH_HINT
    if _SCIENTIFIC.fullmatch(gid):
        return SCIENTIFIC_HINT
    try:
        as_float = float(gid)
    except ValueError:
        return ""
    if as_float.is_integer() and str(int(as_float)) in test_set and str(int(as_float)) != gid:
        return " (the id was converted to a number: read and write gids as strings, e.g. dtype=str)"
    return ""


# ----------------------------------------------------------------------------------------
# The checks (each returns the problems it found, in the order they are reported)
# ----------------------------------------------------------------------------------------
def split_lines(text: str) -> list[str]:
    """The file's lines (any line ending), without trailing blank lines."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    while lines and not lines[-1].strip():
        lines.pop()
    return lines


def check_header(first_line: str) -> tuple[list[Issue], int]:
    """Problems with line 1, and the index of the first data line (0 when line 1 holds data)."""
    header = _split_fields(first_line)
    if tuple(header) == HEADER:
        return [], 1
    cleaned = [h.strip().lstrip("\ufeff") for h in header]
    if bool(header) and header[0].strip().isdigit():
        return [(1, "header", "line 1: the header 'gid,cite_gid' is missing (line 1 holds data)")], 0
    if tuple(cleaned) == HEADER + ("",):
        msg = (f"line 1: header must be exactly 'gid,cite_gid' (found {_show(first_line, 60)}: "
               "remove the trailing comma; a spreadsheet adds one for an empty column)")
    elif tuple(c.lower() for c in cleaned) == HEADER:
        msg = (f"line 1: header must be exactly 'gid,cite_gid' (found {_show(first_line, 60)}: "
               "check capitals and spaces)")
    elif len(header) == 1 and ("\t" in first_line or ";" in first_line):
        sep = "a tab" if "\t" in first_line else "';'"
        msg = f"line 1: columns must be separated by a comma, found {sep}; the header must be exactly 'gid,cite_gid'"
    else:
        msg = f"line 1: header must be exactly 'gid,cite_gid' (found {_show(first_line, 60)})"
    return [(1, "header", msg)], 1


def check_columns(ln: int, raw: str, fields: list[str], n_ids: int) -> list[Issue]:
    """A row must have exactly two columns; the message guesses why it has not."""
    if len(fields) == 2:
        return []
    if len(fields) == 1:
        if "\t" in raw or ";" in raw:
            sep = "a tab" if "\t" in raw else "';'"
            msg = f"line {ln}: columns must be separated by a comma, found {sep}"
        else:
            msg = f"line {ln}: 1 column, expected 2 (gid,cite_gid)"
    elif len(fields) == 3 and not fields[2].strip():
        msg = f"line {ln}: 3 columns, expected 2 (gid,cite_gid): remove the trailing comma at the end of the line"
    elif len(fields) == n_ids + 1:
        msg = (f"line {ln}: {len(fields)} columns; put the {n_ids} ids in one cite_gid column "
               "separated by single spaces, not commas")
    else:
        msg = f"line {ln}: {len(fields)} columns, expected 2 (gid,cite_gid)"
    return [(ln, "columns", msg)]


def check_gid(ln: int, gid_raw: str, first_seen: dict[str, int],
              test_set: Collection[str] | None) -> tuple[list[Issue], bool]:
    """Problems with a row's gid (spaces, empty, repeated, not a test query); True when usable."""
    issues: list[Issue] = []
    gid = gid_raw.strip()
    if gid != gid_raw:
        issues.append((ln, "gid_spaces", f"line {ln}: gid {_show(gid_raw)} has spaces around it"))
    if not gid:
        issues.append((ln, "gid_empty", f"line {ln}: gid is empty"))
        return issues, False
    if gid in first_seen:
        issues.append((ln, "duplicate_gid", f"line {ln}: gid {_show(gid)} appears again (first on line {first_seen[gid]})"))
        return issues, False
    if test_set is not None and gid not in test_set:
        issues.append((ln, "unknown_gid", f"line {ln}: gid {_show(gid)} is not a test query in test.csv"
                       + _gid_hint(gid, test_set)))
        return issues, False
    return issues, True


def check_separators(ln: int, cite_raw: str, any_odd_separator: bool) -> tuple[list[Issue], list[str]]:
    """Problems with the separators inside cite_gid, and the ids as best understood."""
    if any_odd_separator and _BAD_SEPARATOR.search(cite_raw):
        bad_sep = sorted({c for c in cite_raw.strip(" ") if _BAD_SEPARATOR.match(c)})
        shown = ", ".join(_SEPARATOR_NAMES.get(c, repr(c)) for c in bad_sep)
        issues = [(ln, "separator", f"line {ln}: separate the ids in cite_gid with single spaces (found {shown})")]
        return issues, [t for t in _ID_SEPARATORS.split(cite_raw.strip()) if t]
    if cite_raw.startswith(" ") or cite_raw.endswith(" "):
        return [(ln, "separator", f"line {ln}: cite_gid has spaces at its start or end")], cite_raw.split()
    if "  " in cite_raw:
        return [(ln, "separator", f"line {ln}: ids in cite_gid are separated by more than one space")], cite_raw.split()
    return [], cite_raw.split()


def check_count(ln: int, ids: list[str], n_ids: int) -> list[Issue]:
    if len(ids) == n_ids:
        return []
    if not ids:
        return [(ln, "wrong_count", f"line {ln}: cite_gid is empty, expected exactly {n_ids} ids")]
    return [(ln, "wrong_count", f"line {ln}: {_plural(len(ids), 'id')}, expected exactly {n_ids}")]


def check_repeats(ln: int, ids: list[str], unique: set[str]) -> list[Issue]:
    if len(unique) == len(ids):
        return []
    seen: set[str] = set()
    repeated = []
    for t in ids:
        if t in seen and t not in repeated:
            repeated.append(t)
        seen.add(t)
    shown = ", ".join(f"{_show(t)} x{ids.count(t)}" for t in repeated[:3])
    more = f" and {len(repeated) - 3} more" if len(repeated) > 3 else ""
    return [(ln, "repeated_id", f"line {ln}: repeated ids in cite_gid: {shown}{more} (ids must be unique)")]


def check_ids(ln: int, ids: list[str], unique: set[str], cite_set: Collection[str] | None,
              test_set: Collection[str] | None) -> list[Issue]:
    """Ids that are not cite gids (with a hint when they are query gids or were made numbers)."""
    if cite_set is None or unique <= cite_set:
        return []
    unknown = [t for t in dict.fromkeys(ids) if t not in cite_set]
    shown = ", ".join(_show(t) for t in unknown[:3])
    more = f" and {len(unknown) - 3} more" if len(unknown) > 3 else ""
    hint = ""
    if test_set is not None and any(t in test_set for t in unknown):
        hint = " (some are query gids from test.csv, not cite gids)"
    elif any(_gid_hint(t, cite_set) == FULL_WIDTH_HINT for t in unknown):
        hint = " (some ids have full-width digits: write gids with ASCII digits 0-9)"
    elif any(_SCIENTIFIC.fullmatch(t) for t in unknown):
        hint = SCIENTIFIC_HINT.replace("the id", "ids")
    elif any(_gid_hint(t, cite_set) for t in unknown):
        hint = " (ids were converted to numbers: keep gids as strings)"
    return [(ln, "unknown_cite", f"line {ln}: {_plural(len(unknown), 'id')} not in cite_v2.csv: {shown}{more}{hint}")]


def check_complete(n_rows: int, has_errors: bool, test_list: list[str] | None,
                   first_seen: dict[str, int], n_unreadable: int = 0) -> list[Issue]:
    """Whole-file problems found after the rows: no rows at all, test gids never seen.

    When no row could be read at all (wrong columns, quotes, control characters on every
    line) the missing gids are not listed: that would only repeat the same problem.
    """
    issues: list[Issue] = []
    if n_rows == 0 and not has_errors:
        issues.append((None, "no_rows", "file has a header but no rows"))
    if n_rows and n_unreadable >= n_rows:
        return issues
    if test_list is not None:
        missing = [g for g in test_list if g not in first_seen]
        if missing:
            shown = ", ".join(missing[:SHOW_PER_KIND])
            more = f", ... ({len(missing) - SHOW_PER_KIND:,} more)" if len(missing) > SHOW_PER_KIND else ""
            why = (f" ({_plural(n_unreadable, 'line')} could not be read: fix those first)"
                   if n_unreadable else "")
            issues.append((None, "missing_gid",
                           f"{_plural(len(missing), 'test gid')} of {len(test_list):,} missing: {shown}{more}{why}"))
    return issues


@dataclass
class _Rows:
    """What the row checks share: the known ids and what has been read so far."""

    test_set: Collection[str] | None
    cite_set: Collection[str] | None
    n_ids: int
    any_control: bool
    any_odd_separator: bool
    first_seen: dict[str, int] = field(default_factory=dict)
    n_unreadable: int = 0
    gids: list[str] = field(default_factory=list)
    ranked: list[list[str]] = field(default_factory=list)


def check_row(rows: _Rows, ln: int, raw: str) -> list[Issue]:
    """Every problem of one non-blank data line, in the order they are reported."""
    if rows.any_control and _CONTROL.search(raw):
        return [(ln, "control_chars", f"line {ln}: contains control characters (binary junk?)")]
    if '"' in raw and raw.count('"') % 2:
        return [(ln, "quote", f"line {ln}: unbalanced quote character (\") : the line cannot be read; "
                              "remove the quotes (gids need none)")]
    fields = _split_fields(raw)
    issues = check_columns(ln, raw, fields, rows.n_ids)
    if issues:
        return issues
    gid_raw, cite_raw = fields
    issues, gid_ok = check_gid(ln, gid_raw, rows.first_seen, rows.test_set)
    gid = gid_raw.strip()
    if gid and gid not in rows.first_seen:
        rows.first_seen[gid] = ln
    more, ids = check_separators(ln, cite_raw, rows.any_odd_separator)
    unique = set(ids)
    issues += more
    issues += check_count(ln, ids, rows.n_ids)
    issues += check_repeats(ln, ids, unique)
    issues += check_ids(ln, ids, unique, rows.cite_set, rows.test_set)
    if gid_ok:
        rows.gids.append(gid)
        rows.ranked.append(ids)
    return issues


_UNREADABLE = ("control_chars", "quote", "columns")


def check_rows(lines: list[str], first_data: int, rows: _Rows, report: ValidationReport) -> None:
    """Run :func:`check_row` on every data line (blank lines are warnings), adding to ``report``."""
    add = report.add
    for idx in range(first_data, len(lines)):
        ln = idx + 1
        raw = lines[idx]
        if not raw.strip():
            add(ln, "blank_line", f"line {ln}: blank line (ignored)", "warning")
            continue
        report.n_rows += 1
        issues = check_row(rows, ln, raw)
        if issues and issues[0][1] in _UNREADABLE:
            rows.n_unreadable += 1
        for issue in issues:
            add(*issue)


# ----------------------------------------------------------------------------------------
# The validator
# ----------------------------------------------------------------------------------------
def validate_submission(
    source: Any,
    test_gids: Iterable[str] | None = None,
    cite_gids: Iterable[str] | None = None,
    *,
    n_ids: int = N_IDS,
    max_bytes: int | None = None,
    name: str | None = None,
) -> ValidationReport:
    """Check a submission and return a :class:`ValidationReport` with every problem.

    ``source`` is a path, raw ``bytes``, a binary or text file object, a pandas DataFrame
    (``gid``, ``cite_gid`` as a space-separated string or a list) or a ``{gid: [ids]}`` dict.
    Without ``test_gids`` / ``cite_gids`` only the format is checked. Never raises on a bad
    file; raises only on a wrong call. The checks run in this order: reading, encoding,
    header, every row, completeness.
    """
    test_list = [str(g) for g in test_gids] if test_gids is not None else None
    test_set = set(test_list) if test_list is not None else None
    cite_set = cite_gids if isinstance(cite_gids, (set, frozenset)) else (
        {str(c) for c in cite_gids} if cite_gids is not None else None
    )
    if max_bytes is None:
        max_bytes = size_limit(len(test_list) if test_list else None, n_ids)
    report = ValidationReport(source=name or "")
    data = _read_source(source, max_bytes, report)
    if data is None:
        return report
    issues, text = check_encoding(data)
    for issue in issues:
        report.add(*issue)
    if text is None:
        return report
    lines = split_lines(text)
    if not lines:  # only a byte-order mark
        report.add(None, "empty", "file is empty: expected the header 'gid,cite_gid' and one row per test gid")
        return report
    issues, first_data = check_header(lines[0])
    for issue in issues:
        report.add(*issue)
    # Whole-text scans (fast, in C) decide which per-line checks are needed at all.
    rows = _Rows(test_set, cite_set, n_ids, any_control=bool(_CONTROL.search(text)),
                 any_odd_separator=bool(_BAD_SEPARATOR.search(text)) or '"' in text)
    check_rows(lines, first_data, rows, report)
    for issue in check_complete(report.n_rows, bool(report.errors), test_list, rows.first_seen, rows.n_unreadable):
        report.add(*issue)
    report.gids, report.ranked = rows.gids, rows.ranked
    return report


# ----------------------------------------------------------------------------------------
# Writing and reading
# ----------------------------------------------------------------------------------------
def _rows_from(ranked: Any) -> list[tuple[str, str]]:
    """(gid, 'id id id ...') pairs from a dict, a DataFrame or an iterable of pairs."""
    if isinstance(ranked, Mapping):
        items = ranked.items()
    elif hasattr(ranked, "columns") and hasattr(ranked, "itertuples"):  # pandas DataFrame
        df = ranked
        if "gid" not in df.columns and getattr(df.index, "name", None) == "gid":
            df = df.reset_index()
        if list(df.columns) != list(HEADER):
            # Keep the columns as they are: the validator reports a wrong header precisely.
            buf = io.StringIO()
            df.to_csv(buf, index=False, lineterminator="\n")
            return [("\0raw", buf.getvalue())]
        items = zip(df["gid"].tolist(), df["cite_gid"].tolist())
    else:
        items = ranked
    rows = []
    for gid, ids in items:
        if isinstance(ids, str):
            joined = ids
        elif ids is None or (isinstance(ids, float) and ids != ids):
            joined = ""
        else:
            joined = " ".join(str(i) for i in ids)
        rows.append((str(gid), joined))
    return rows


def submission_bytes(ranked: Any) -> bytes:
    """The CSV bytes for ``ranked`` ({gid: ids} dict, DataFrame or (gid, ids) pairs), unchecked."""
    rows = _rows_from(ranked)
    if len(rows) == 1 and rows[0][0] == "\0raw":
        return rows[0][1].encode("utf-8")
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(HEADER)
    writer.writerows(rows)
    return buf.getvalue().encode("utf-8")


def write_submission(
    ranked: Any,
    path: str | os.PathLike,
    *,
    test_gids: Iterable[str] | None = None,
    cite_gids: Iterable[str] | None = None,
    n_ids: int = N_IDS,
    check: bool = True,
) -> Path:
    """Write a submission CSV atomically (UTF-8, no BOM, ``\\n`` line ends).

    ``ranked`` is ``{gid: [cite ids best first]}``, or a DataFrame with ``gid`` and
    ``cite_gid`` (a list or a space-separated string per row). With ``check`` (default) the
    file is validated first -- against ``test_gids`` / ``cite_gids`` when given -- and
    nothing is written if there is an error (:class:`SubmissionError` lists them all).
    """
    data = submission_bytes(ranked)
    path = Path(path)
    if check:
        report = validate_submission(data, test_gids, cite_gids, n_ids=n_ids, max_bytes=len(data) + 1,
                                     name=path.name)
        if not report.ok:
            raise SubmissionError(report)
    return atomic_write_bytes(path, data)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` via a temporary file and a rename: readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def read_submission(
    path_or_df: Any,
    test_gids: Iterable[str] | None = None,
    cite_gids: Iterable[str] | None = None,
    *,
    n_ids: int = N_IDS,
):
    """Read and validate a submission; returns a DataFrame ``gid, cite_gid`` of strings.

    Raises :class:`SubmissionError` (listing every problem) when the file is invalid.
    """
    import pandas as pd

    report = validate_submission(path_or_df, test_gids, cite_gids, n_ids=n_ids)
    if not report.ok:
        raise SubmissionError(report)
    return pd.DataFrame(
        {"gid": report.gids, "cite_gid": [" ".join(ids) for ids in report.ranked]}, dtype=str
    )


def load_gids(csv_path: str | os.PathLike, column: str = "gid") -> list[str]:
    """One column of a competition CSV (test.csv, cite_v2.csv ...) as a list of strings."""
    with open(csv_path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if not header or column not in header:
            raise ValueError(f"{csv_path}: no {column!r} column (header: {header})")
        col = header.index(column)
        return [row[col].strip() for row in reader if row]


def check_submission(source: Any, data_dir: str | os.PathLike, *, verbose: bool = True) -> ValidationReport:
    """Validate against a participant folder's test.csv and cite_v2.csv; print the verdict.

    This is the leaderboard's own validation, run locally before submitting.
    """
    data_dir = Path(data_dir)
    report = validate_submission(
        source, load_gids(data_dir / "test.csv"), load_gids(data_dir / "cite_v2.csv"),
    )
    if verbose:
        print(report.format())
    return report
