"""The host's view: race plots, no private score before close, the booklet, public intervals."""

from __future__ import annotations

import csv
import io
import os
import random
import re
import sys
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent / "leaderboard_fixtures"))
from lbfix import Clock, make_dataset, ranked_lists, write_csv  # noqa: E402

from leaderboard import Competition  # noqa: E402
from leaderboard.booklet import booklet_html  # noqa: E402
from leaderboard.cli import main as cli_main  # noqa: E402
from leaderboard.plots import race_pngs  # noqa: E402
from leaderboard.render import board_csv, export  # noqa: E402
from leaderboard.scorer import fmt  # noqa: E402
from leaderboard.web import create_app  # noqa: E402
from tmr_lib.metrics import paired_bootstrap, query_hits  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture()
def ds(tmp_path):
    return make_dataset(tmp_path / "data", n_test=40, n_cite=200)


def public_gids(comp) -> set[str]:
    return {r[0] for r in comp.con.execute("SELECT gid FROM queries WHERE split = 'public'")}


def send(comp, ds, tmp_path, team, hits, seed=1):
    safe = re.sub(r"\W", "_", team)
    path = write_csv(tmp_path / f"{comp.path.name}_{safe}_{seed}.csv", ranked_lists(ds, hits, seed=seed))
    return comp.submit(path, team)


# ---- plots ------------------------------------------------------------------------------------
def test_race_plots_are_pngs_and_the_shakeup_comes_only_after_close(ds, tmp_path):
    from PIL import Image

    clock = Clock()
    c, _ = Competition.create(ds["host"], path=tmp_path / "c", teams=["alpha", "beta $x$ ", "<b>x</b>"], seed=3,
                              now=clock)
    empty = race_pngs(c)
    assert set(empty) == {"submissions_per_day", "best_public"} and all(p.startswith(PNG) for p in empty.values())
    for day in range(3):
        for k, team in enumerate(["alpha", "beta $x$", "<b>x</b>"]):
            send(c, ds, tmp_path, team, {g: (1 if (i + day + k) % 3 else None) for i, g in enumerate(ds["test"])},
                 seed=10 * day + k)
        clock.advance(days=1)
    assert all(set(r) == {"team_id", "team", "submitted_at", "id", "public_recall", "public_mrr"} for r in c.race())
    pngs = race_pngs(c)
    assert set(pngs) == {"submissions_per_day", "best_public"}
    assert pngs["best_public"] != empty["best_public"]
    c.close()
    pngs = race_pngs(c)
    assert set(pngs) == {"submissions_per_day", "best_public", "shakeup"}
    for png in pngs.values():
        with Image.open(io.BytesIO(png)) as im:
            assert im.size[0] >= 500 and len(im.convert("RGB").getcolors(1 << 20)) > 20  # drawn, not blank
    files = export(c, tmp_path / "exp")
    assert {p.name for p in files} >= {"race_submissions_per_day.png", "race_best_public.png", "race_shakeup.png"}
    page = create_app(c.path).test_client().post("/host", data={"token": "wrong"})
    assert page.status_code == 403 and b"data:image/png" not in page.data
    c.close_db()


# ---- no private score anywhere before close ---------------------------------------------------
def _twins(ds, tmp_path):
    """Two competitions identical on the public queries, different on the private ones."""
    clock = Clock()
    twins = []
    for k in (0, 1):
        c, tokens = Competition.create(ds["host"], path=tmp_path / f"twin{k}" / "c", name="twin", seed=5,
                                       teams=["alpha", "beta"], daily_limit=10, now=clock, public_intervals=True)
        c.tokens = tokens
        twins.append(c)
    pub = public_gids(twins[0])
    plan = [("alpha", 0.9, 1), ("beta", 0.6, 2), ("alpha", 0.7, 3), ("beta", 0.8, 4)]
    for team, p, seed in plan:
        rng = random.Random(seed)
        public = {g: rng.randint(1, 20) if rng.random() < p else None for g in sorted(pub)}
        for k, c in enumerate(twins):
            q = 0.9 if (team == "alpha") == (k == 0) else 0.2  # the private ranking flips between twins
            prng = random.Random(10 * seed + k)
            private = {g: prng.randint(1, 20) if prng.random() < q else None for g in ds["test"] if g not in pub}
            send(c, ds, tmp_path, team, {**public, **private}, seed=seed)
        clock.advance(hours=9)
    return twins


def _served(c) -> dict[str, str]:
    """Everything a team or a visitor can fetch, with per-competition tokens and times masked."""
    client = create_app(c.path, now=c._now).test_client()
    out = {p: client.get(p).get_data(as_text=True) for p in ("/", "/api/board", "/board.csv", "/team", "/submit")}
    for team in ("alpha", "beta"):
        out[f"team {team}"] = client.post("/team", data={"token": c.tokens[team]}).get_data(as_text=True)
    host = client.post("/host", data={"token": c.tokens["host"]}).get_data(as_text=True)
    out["host plots"] = "\n".join(re.findall(r'src="(data:image/png;base64,[^"]+)"', host))
    assert out["host plots"].count("data:image/png") == (3 if c.is_closed() else 2)  # + the shake-up
    return {k: _mask(v, c) for k, v in out.items()}


def _mask(text: str, c) -> str:
    for tok in c.tokens.values():
        text = text.replace(tok, "TOKEN")
    return re.sub(r"generated \d{4}-\d\d-\d\d \d\d:\d\d UTC", "generated T", text)


def test_private_scores_never_reach_a_plot_route_or_export_before_close(ds, tmp_path):
    a, b = _twins(ds, tmp_path)
    pa, pb = a.private_board(host=True), b.private_board(host=True)
    assert [r["recall20"] for r in pa] != [r["recall20"] for r in pb]  # the twins differ in private
    assert a.public_board() == b.public_board() and "ci_low" in a.public_board()[0]

    assert race_pngs(a) == race_pngs(b)
    assert _served(a) == _served(b)
    ea, eb = export(a, tmp_path / "ea"), export(b, tmp_path / "eb")
    assert [p.name for p in ea] == ["board.html", "public_board.csv", "race_submissions_per_day.png",
                                    "race_best_public.png"]
    for x, y in zip(ea, eb):
        if x.suffix == ".png":
            assert x.read_bytes() == y.read_bytes(), x.name
        else:
            assert _mask(x.read_text(encoding="utf-8-sig"), a) == _mask(y.read_text(encoding="utf-8-sig"), b)
    for r in pa + pb:  # and no private figure as text either
        for text in _served(a).values():
            assert f"{r['recall20']:.4f}" not in text or r["recall20"] == r["public_recall20"]

    a.close()
    b.close()
    assert _served(a)["/"] != _served(b)["/"]  # once closed, the private ranking is there to differ
    for c in (a, b):
        c.close_db()


# ---- the booklet ------------------------------------------------------------------------------
def test_booklet_in_rank_order_with_scores_categories_and_writeups(ds, tmp_path):
    c, _ = Competition.create(ds["host"], path=tmp_path / "c", teams=["alpha", "beta", "<i>gamma</i>"], seed=2)
    for k, team in enumerate(["alpha", "beta", "<i>gamma</i>"]):
        send(c, ds, tmp_path, team, {g: (1 if i % (k + 2) else None) for i, g in enumerate(ds["test"])}, seed=k)
    assert not (set(p.name for p in export(c, tmp_path / "early")) & {"booklet.html", "race_shakeup.png"})
    early = booklet_html(c)
    assert "HOST ONLY — provisional" in early and "data:image/png" not in early
    c.close()
    c.set_writeup("# Beta's trick\n\n**TTA** with `flip`; see [notes](https://example.com/n)", "beta")
    c.set_writeup("<script>alert(1)</script>", "<i>gamma</i>")
    rows = c.private_board()
    out = export(c, tmp_path / "exp")
    assert [p.name for p in out][:4] == ["board.html", "public_board.csv", "private_board.csv", "booklet.html"]
    html = (tmp_path / "exp" / "booklet.html").read_text()

    sections = re.findall(r'<section class="team" id="rank-(\d+)">\s*<h2>#\d+ · (.*?)</h2>(.*?)</section>', html, re.S)
    assert [int(s[0]) for s in sections] == [r["rank"] for r in rows] == [1, 2, 3]
    assert [s[1] for s in sections] == [r["team"].replace("<", "&lt;").replace(">", "&gt;") for r in rows]
    for (_, _, body), r in zip(sections, rows):
        assert f"private Recall@20<b>{fmt(r['recall20'])}</b>" in body and f"<b>{fmt(r['mrr'])}</b>" in body
        for cat, value in r["private_per_category"].items():
            assert re.search(rf"<td>{cat} [^<]+</td><td class=\"num\">{re.escape(fmt(value))}</td>", body)
        if r["team"] == "beta":
            assert "<h3>Beta&#39;s trick</h3>" in body or "<h3>Beta&#x27;s trick</h3>" in body
            assert '<a href="https://example.com/n" rel="noopener noreferrer nofollow">notes</a>' in body
        elif r["team"] == "alpha":
            assert "No write-up." in body
        else:
            assert "&lt;script&gt;alert(1)&lt;/script&gt;" in body
    # self-contained and inert: strict CSP, no script, no external fetch, a page per team in print
    assert "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none';" in html
    assert "<script" not in html and "<link" not in html and "@import" not in html and "url(" not in html
    assert all(src.startswith("data:image/png;base64,") for src in re.findall(r'src="([^"]*)"', html))
    assert len(re.findall(r'src="', html)) == 1  # the shake-up
    assert "page-break-before: always" in html and "break-before: page" in html
    c.close_db()


# ---- intervals on the public board ------------------------------------------------------------
def test_public_intervals_only_when_the_host_turns_them_on(ds, tmp_path, capsys):
    c, tokens = Competition.create(ds["host"], path=tmp_path / "c", teams=["alpha", "beta", "gamma"], seed=4)
    pub = public_gids(c)
    mixed = {g: (1 if i % 3 else None) for i, g in enumerate(ds["test"])}
    send(c, ds, tmp_path, "alpha", mixed, seed=1)
    send(c, ds, tmp_path, "beta", mixed, seed=1)  # the very same file: a tie within noise
    send(c, ds, tmp_path, "gamma", {g: None for g in ds["test"]}, seed=2)  # nothing found: far below
    client = create_app(c.path).test_client()

    assert not c.settings()["public_intervals"]
    assert all("ci_low" not in r for r in c.public_board())
    assert "95 % interval" not in client.get("/").get_data(as_text=True)
    assert "low95" not in board_csv(c)
    cli_main(["show", "--dir", str(c.path)])
    assert "95% interval" not in capsys.readouterr().out

    c.set_public_intervals(True)
    rows = c.public_board()
    for r in rows:
        assert r["ci_low"] <= r["recall20"] <= r["ci_high"]
    assert [r["within_noise_of_above"] for r in rows] == [None, True, False]
    ranked = [ranked_lists(ds, mixed, seed=1)[g] for g in ds["test"]]
    hits = query_hits(ranked, [ds["answers"][g] for g in ds["test"]])[[g in pub for g in ds["test"]]]
    expected = paired_bootstrap(hits, n_resamples=1000, seed=0)
    assert (rows[0]["ci_low"], rows[0]["ci_high"]) == (round(expected["low"], 4), round(expected["high"], 4))
    assert rows[0]["ci_low"] < rows[0]["ci_high"] and len(hits) == len(pub) and len(hits) < len(ds["test"])
    assert c.public_board() == rows  # seeded: the same interval every time
    page = client.get("/").get_data(as_text=True)
    assert "95 % interval" in page and f"{fmt(rows[0]['ci_low'])} – {fmt(rows[0]['ci_high'])}" in page
    assert "≈ #1: within noise" in page and "≈ #2" not in page
    header = next(csv.reader(io.StringIO(board_csv(c).lstrip("\ufeff"))))
    assert header[-3:] == ["public_recall20_low95", "public_recall20_high95", "within_noise_of_above"]
    cli_main(["show", "--dir", str(c.path)])
    assert re.search(r"2\s+beta\s+\S+\s+\d\.\d{4}–\d\.\d{4}\s+≈ #1", capsys.readouterr().out)
    assert client.get("/api/board").get_json()["public"][0]["ci_low"] == rows[0]["ci_low"]

    c.set_public_intervals(False)
    assert all("ci_low" not in r for r in c.public_board())
    c.close_db()
    d, _ = Competition.create(ds["host"], path=tmp_path / "d", seed=4, public_intervals=True)
    assert d.settings()["public_intervals"]
    d.close_db()


# ---- the picture in the docs --------------------------------------------------------------------
def test_race_plots_for_the_docs(tmp_path):
    """A week-long race; docs/leaderboard_race.png is (re)written when absent or TMR_UPDATE_SCREENSHOT=1."""
    from PIL import Image

    ds = make_dataset(tmp_path / "data", n_test=200, n_cite=600, name="tmr-demo")
    clock = Clock("2025-03-03T09:00:00+00:00")
    teams = ["Tokyo 🗼 team", "データ分析チーム", "mobilenet baseline", "ViT-S + TTA", "<b>html</b>"]
    c, _ = Competition.create(ds["host"], path=tmp_path / "c", name="tmr-demo", teams=teams, seed=7, now=clock)
    rng = random.Random(3)
    base = [0.55, 0.5, 0.42, 0.6, 0.3]
    for day in range(6):
        for k, team in enumerate(teams):
            for j in range(rng.randint(0, 3)):
                p = min(0.92, base[k] + 0.04 * day + rng.uniform(-0.05, 0.05))
                hits = {g: (rng.randint(1, 20) if rng.random() < p else None) for g in ds["test"]}
                send(c, ds, tmp_path, team, hits, seed=100 * day + 10 * k + j)
                clock.advance(minutes=37)
        clock.advance(hours=20)
    c.close()
    images = [Image.open(io.BytesIO(png)).convert("RGB") for png in race_pngs(c).values()]
    width = max(im.size[0] for im in images)
    sheet = Image.new("RGB", (width, sum(im.size[1] for im in images)), "white")
    y = 0
    for im in images:
        sheet.paste(im, (0, y))
        y += im.size[1]
    assert np.asarray(sheet).std() > 10
    docs = REPO / "docs" / "leaderboard_race.png"
    if not docs.exists() or os.environ.get("TMR_UPDATE_SCREENSHOT") == "1":
        docs.parent.mkdir(exist_ok=True)
        sheet.save(docs, optimize=True)
    c.close_db()
