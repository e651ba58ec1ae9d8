"""tmr_lib.submission: the writer, the reader and the catalogue of bad files."""

from __future__ import annotations

import sys

import pandas as pd
import pytest

from tmr_lib.submission import (
    SubmissionError,
    read_submission,
    submission_bytes,
    validate_submission,
    write_submission,
)

TEST = [f"50000000{i:02d}" for i in range(12)]
CITES = [f"10000000{i:02d}" for i in range(60)]


def good_rows() -> dict[str, list[str]]:
    return {g: CITES[i : i + 20] for i, g in enumerate(TEST)}


def csv_bytes(rows: dict[str, list[str]] | list[tuple[str, str]], header: str = "gid,cite_gid") -> bytes:
    items = rows.items() if isinstance(rows, dict) else rows
    lines = [header] + [f"{g},{ids if isinstance(ids, str) else ' '.join(ids)}" for g, ids in items]
    return ("\n".join(lines) + "\n").encode()


def check(data, **kw):
    return validate_submission(data, TEST, CITES, **kw)


def messages(report) -> str:
    return report.format()


def test_good_file_passes_and_round_trips(tmp_path):
    path = write_submission(good_rows(), tmp_path / "sub.csv", test_gids=TEST, cite_gids=CITES)
    report = check(path)
    assert report.ok, report.format()
    assert report.n_rows == len(TEST) and not report.problems
    assert report.as_dict() == good_rows()
    assert len(report.sha256) == 64
    df = read_submission(path, TEST, CITES)
    assert list(df.columns) == ["gid", "cite_gid"] and df["gid"].tolist() == TEST
    assert df["cite_gid"].map(lambda s: len(s.split(" "))).eq(20).all()
    raw = path.read_bytes()
    assert raw.startswith(b"gid,cite_gid\n") and b"\r" not in raw and not raw.startswith(b"\xef\xbb\xbf")


def test_dataframe_and_dict_sources_share_the_path():
    rows = good_rows()
    df = pd.DataFrame({"gid": list(rows), "cite_gid": [list(v) for v in rows.values()]})
    assert check(df).ok
    df2 = pd.DataFrame({"gid": list(rows), "cite_gid": [" ".join(v) for v in rows.values()]})
    assert check(df2).ok
    assert check(rows).ok
    assert submission_bytes(df) == submission_bytes(df2) == submission_bytes(rows)
    # a DataFrame with other columns: the header problem is reported, not a crash
    bad = check(pd.DataFrame({"id": list(rows), "cites": list(rows.values())}))
    assert not bad.ok and "header" in messages(bad)


def test_write_submission_refuses_and_writes_nothing(tmp_path):
    rows = good_rows()
    rows[TEST[0]] = rows[TEST[0]][:19]
    with pytest.raises(SubmissionError) as err:
        write_submission(rows, tmp_path / "sub.csv", test_gids=TEST, cite_gids=CITES)
    assert "line 2: 19 ids, expected exactly 20" in str(err.value)
    assert list(tmp_path.iterdir()) == []


# ---- the catalogue: each bad file gives its own message ---------------------------------------
def _with(row_index: int, ids) -> bytes:
    rows = good_rows()
    rows[TEST[row_index]] = ids
    return csv_bytes(rows)


CATALOGUE = [
    ("wrong header", csv_bytes(good_rows(), header="id,cites"), "line 1: header must be exactly 'gid,cite_gid'"),
    ("header capitalised", csv_bytes(good_rows(), header="GID,Cite_Gid"), "check capitals and spaces"),
    ("no header", csv_bytes(good_rows(), header="").lstrip(b"\n"), "line 1: the header 'gid,cite_gid' is missing"),
    ("19 ids", _with(3, CITES[:19]), "line 5: 19 ids, expected exactly 20"),
    ("21 ids", _with(4, CITES[:21]), "line 6: 21 ids, expected exactly 20"),
    ("repeated id", _with(0, CITES[:19] + [CITES[0]]), "line 2: repeated ids in cite_gid: '1000000000' x2"),
    ("unknown cite id", _with(1, CITES[:19] + ["9999999999"]), "line 3: 1 id not in cite_v2.csv: '9999999999'"),
    ("query id as cite", _with(1, CITES[:19] + [TEST[5]]), "some are query gids from test.csv"),
    ("comma separated ids", csv_bytes([(g, ",".join(v)) for g, v in good_rows().items()]),
     "line 2: 21 columns; put the 20 ids in one cite_gid column separated by single spaces"),
    ("double spaces", _with(2, "  ".join(CITES[:20])), "line 4: ids in cite_gid are separated by more than one space"),
    ("tab separated ids", _with(2, "\t".join(CITES[:20])), "line 4: separate the ids in cite_gid with single spaces (found tab)"),
    ("full-width space", _with(2, "\u3000".join(CITES[:20])),
     "line 4: separate the ids in cite_gid with single spaces (found full-width space)"),
    ("trailing space", _with(2, " ".join(CITES[:20]) + " "), "line 4: cite_gid has spaces at its start or end"),
    ("empty cite_gid", _with(6, ""), "line 8: cite_gid is empty, expected exactly 20 ids"),
    ("tab as column separator", csv_bytes(good_rows()).replace(b",", b"\t", 3),
     "columns must be separated by a comma, found a tab"),
    ("empty file", b"", "file is empty"),
    ("only whitespace", b"\n \n", "file is empty"),
    ("header only", b"gid,cite_gid\n", "file has a header but no rows"),
    ("binary junk", bytes(range(256)) * 40, "binary data (a NUL byte"),
    ("not utf-8", csv_bytes(good_rows()) + "5000000000,テスト\n".encode("cp932"), "not valid UTF-8"),
    ("utf-16", "gid,cite_gid\n".encode("utf-16"), "UTF-16 encoded"),
    ("gzip", b"\x1f\x8b\x08\x00" + b"x" * 50, "gzip-compressed"),
    ("xlsx", b"PK\x03\x04" + b"x" * 50, "zip archive (or an Excel .xlsx workbook)"),
    ("control characters", csv_bytes(good_rows()) + b"50000000\x0701,x\n", "contains control characters"),
]


@pytest.mark.parametrize("name,data,expected", CATALOGUE, ids=[c[0] for c in CATALOGUE])
def test_bad_file_catalogue(name, data, expected):
    report = check(data)
    assert not report.ok, f"{name} was accepted"
    text = report.format()
    assert expected in text, text
    assert text.startswith("upload: REJECTED")


def test_missing_duplicate_and_unknown_gids_all_reported_with_lines():
    rows = list(good_rows().items())
    rows = rows[:8]  # 4 missing
    rows.insert(3, rows[1])  # duplicate of line 3 on line 5
    rows.append(("5999999999", CITES[:20]))  # unknown
    rows.append(("5000000001.0", CITES[:20]))  # an id that went through float
    report = check(csv_bytes(rows))
    text = report.format()
    assert "line 5: gid '5000000001' appears again (first on line 3)" in text
    assert "line 11: gid '5999999999' is not a test query in test.csv" in text
    assert "line 12: gid '5000000001.0' is not a test query" in text and "dtype=str" in text
    assert "4 test gids of 12 missing: 5000000008, 5000000009, 5000000010, 5000000011" in text
    assert report.n_errors == 4


def test_every_problem_listed_at_once():
    data = _with(3, CITES[:19]).replace(b"gid,cite_gid", b"gid;cite_gid")
    data += b"5000000003,x\n"
    report = check(data)
    kinds = {p.kind for p in report.errors}
    assert {"header", "wrong_count", "duplicate_gid", "unknown_cite"} <= kinds
    lines = {p.line for p in report.errors}
    assert {1, 5, 14} <= lines


def test_bom_is_a_warning_and_crlf_is_fine():
    data = b"\xef\xbb\xbf" + csv_bytes(good_rows()).replace(b"\n", b"\r\n")
    report = check(data)
    assert report.ok, report.format()
    assert [p.kind for p in report.warnings] == ["bom"]
    assert "byte-order mark (BOM)" in report.format()


def test_quoted_fields_are_read_as_csv():
    rows = [(f'"{g}"', f'"{" ".join(v)}"') for g, v in good_rows().items()]
    assert check(csv_bytes(rows)).ok


def test_size_cap_50mb_file_refused_without_reading(tmp_path):
    path = tmp_path / "huge.csv"
    with open(path, "wb") as fh:
        fh.write(csv_bytes(good_rows()))
        fh.truncate(50 * 1024 * 1024)
    report = check(path)
    assert not report.ok
    assert "file is 50.0 MB; the limit is 8.0 MB" in report.format()
    assert report.data == b""  # refused before reading
    # the same cap applies to bytes and file objects
    assert "larger than the limit" in check(b"x" * (9 * 1024 * 1024)).format()
    with open(path, "rb") as fh:
        assert "larger than the limit" in check(fh).format()


def test_many_bad_rows_are_summarised_not_flooded():
    rows = {g: CITES[:19] for g in TEST}
    report = check(csv_bytes(rows))
    text = report.format(show_per_kind=5)
    assert report.counts["wrong_count"] == 12
    assert "... and 7 more lines with the same problem (wrong_count)" in text


def test_missing_file_and_messages_escape_control_characters(tmp_path):
    assert "file not found" in check(tmp_path / "nope.csv").format()
    report = check(csv_bytes({"50\u202e0000": CITES[:20]}))
    assert "'50\\u202e0000'" in report.format()


def test_speed_100k_rows():
    import time

    test = [str(5_000_000_000 + i) for i in range(100_000)]
    cites = [str(1_000_000_000 + i) for i in range(200_000)]
    data = "gid,cite_gid\n" + "".join(
        f"{g},{' '.join(cites[(i * 7 + j * 13) % 200_000] for j in range(20))}\n" for i, g in enumerate(test)
    )
    t0 = time.perf_counter()
    report = validate_submission(data.encode(), test, cites)
    elapsed = time.perf_counter() - t0
    assert report.ok, report.format()
    assert elapsed < 15, f"validating 100k rows took {elapsed:.1f}s"
    print(f"validated 100,000 rows in {elapsed:.2f}s", file=sys.stderr)
