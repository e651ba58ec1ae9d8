"""The seven misleading messages of issue 16, each with the exact kind of bad file that caused it."""

from __future__ import annotations

import random

import pytest

from tmr_lib.submission import validate_submission

rng = random.Random(5)
TEST = [str(1_083_060_000 + 1000 * i + rng.randrange(999)) for i in range(60)]
CITES = [str(2_000_000_000 + i * 37) for i in range(400)]
ROWS = [(g, rng.sample(CITES, 20)) for g in TEST]
GOOD = "gid,cite_gid\n" + "".join(f"{g},{' '.join(ids)}\n" for g, ids in ROWS)


def report(data: bytes | str):
    r = validate_submission(data.encode("utf-8") if isinstance(data, str) else data, TEST, set(CITES), name="f.csv")
    assert not r.ok
    return r, r.format()


def test_the_good_file_is_good():
    assert validate_submission(GOOD.encode(), TEST, set(CITES)).ok


@pytest.mark.parametrize("codec", ["utf-16-le", "utf-16-be"])
def test_utf16_without_bom_is_called_utf16_not_binary(codec):
    r, text = report(GOOD.encode(codec))
    assert "UTF-16 encoded (without a byte-order mark): save it as UTF-8" in text
    assert "binary data" not in text


def test_full_width_digits_get_their_own_hint_not_the_number_hint():
    fw = str.maketrans("0123456789", "０１２３４５６７８９")
    bad = GOOD.replace(f"\n{TEST[3]},", f"\n{TEST[3].translate(fw)},")
    r, text = report(bad)
    assert "full-width digits: write gids with ASCII digits 0-9" in text
    assert "converted to a number" not in text
    first_cite = ROWS[0][1][0]
    r, text = report(GOOD.replace(f",{first_cite} ", f",{first_cite.translate(fw)} ", 1))
    assert "some ids have full-width digits" in text


def test_excel_scientific_notation_gets_a_hint():
    sci = f"{int(TEST[7]) / 1e9:.5f}E+09"  # e.g. 1.08306E+09, as Excel shows a long number
    r, text = report(GOOD.replace(f"\n{TEST[7]},", f"\n{sci},"))
    assert f"gid '{sci}' is not a test query" in text and "scientific notation and lost digits" in text


def test_wrong_column_count_on_every_row_does_not_also_report_every_gid_missing():
    bad = "gid,cite_gid\n" + "".join(f"{g};{' '.join(ids)}\n" for g, ids in ROWS)
    r, text = report(bad)
    assert "test gids of 60 missing" not in text and "columns must be separated by a comma" in text
    half = "gid,cite_gid\n" + "".join(f"{g}{';' if i % 2 else ','}{' '.join(ids)}\n" for i, (g, ids) in enumerate(ROWS))
    r, text = report(half)
    assert "30 test gids of 60 missing" in text and "(30 lines could not be read: fix those first)" in text


def test_trailing_comma_on_every_line_says_remove_it():
    r, text = report(GOOD.replace("\n", ",\n"))
    assert "line 1: header must be exactly 'gid,cite_gid' (found 'gid,cite_gid,': remove the trailing comma" in text
    assert "line 2: 3 columns, expected 2 (gid,cite_gid): remove the trailing comma at the end of the line" in text


def test_unbalanced_quote_is_called_a_quote_problem_not_an_unknown_gid():
    r, text = report(GOOD.replace(f"\n{TEST[9]},", f'\n"{TEST[9]},'))
    assert "line 11: unbalanced quote character" in text
    assert "not a test query" not in text


def test_bom_only_file_is_empty_not_a_crash():
    r, text = report(b"\xef\xbb\xbf")
    assert "file is empty" in text


def test_a_1mb_form_field_is_not_called_a_file_too_large(tmp_path):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent / "leaderboard_fixtures"))
    from lbfix import make_dataset, ranked_lists, write_csv

    from leaderboard import Competition
    from leaderboard.web import create_app

    ds = make_dataset(tmp_path / "data", n_test=40, n_cite=200)
    comp, tokens = Competition.create(ds["host"], path=tmp_path / "c", teams=["alpha"], seed=1)
    good = write_csv(tmp_path / "g.csv", ranked_lists(ds, {}))
    client = create_app(comp.path).test_client()
    r = client.post("/submit", data={"token": tokens["alpha"], "note": "x" * 1_000_000,
                                     "file": (good.open("rb"), "g.csv")})
    assert r.status_code == 413
    assert b"a form field is too large" in r.data and b"file too large" not in r.data
