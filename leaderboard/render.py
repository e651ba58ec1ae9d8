"""HTML (Jinja2, autoescaped) and CSV rendering of boards, shared by the web app and ``export``.

Every team name, note and file name goes through Jinja2's autoescape; the CSV export
neutralises cells that a spreadsheet would run as a formula.
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path
from typing import Any

from jinja2 import DictLoader, Environment, select_autoescape
from markupsafe import Markup

from tmr_lib.submission import atomic_write_bytes

from .core import Competition, short_time
from .intervals import N_RESAMPLES
from .markdown import render_markdown
from .scorer import fmt

CSS = """
:root { --ink:#1d2430; --muted:#5b6575; --line:#e3e7ee; --accent:#1f6feb; --bg:#f6f8fb; }
* { box-sizing: border-box; }
body { font: 15px/1.45 -apple-system, "Segoe UI", "Helvetica Neue", Arial, "Liberation Sans", "DejaVu Sans",
       "Hiragino Sans", "Noto Sans CJK JP", "Yu Gothic", Meiryo, "IPAexGothic", "IPAPGothic", sans-serif; color: var(--ink); background: var(--bg); margin: 0; }
header { background: #0f2942; color: #fff; padding: 14px 28px; display: flex; align-items: baseline;
         gap: 18px; flex-wrap: wrap; }
header h1 { font-size: 21px; margin: 0; font-weight: 650; }
header nav a { color: #cfe3ff; margin-right: 14px; text-decoration: none; }
header nav a:hover { text-decoration: underline; }
.badge { display: inline-block; padding: 2px 10px; border-radius: 999px; font-size: 12.5px;
         font-weight: 600; letter-spacing: .02em; }
.open { background: #d9f7e2; color: #0b6b2b; } .closed { background: #ffe3e0; color: #9b1c13; }
.frozen { background: #fff1c9; color: #7a5300; }
main { max-width: 1040px; margin: 22px auto; padding: 0 20px; }
.facts { color: var(--muted); margin: 0 0 14px; font-size: 14px; }
.facts b { color: var(--ink); font-weight: 600; }
section { background: #fff; border: 1px solid var(--line); border-radius: 10px; padding: 16px 20px;
          margin-bottom: 20px; }
section h2 { font-size: 17px; margin: 0 0 10px; }
table { border-collapse: collapse; width: 100%; font-variant-numeric: tabular-nums; }
th, td { padding: 7px 10px; border-bottom: 1px solid var(--line); text-align: left; vertical-align: middle; }
th { font-size: 12.5px; text-transform: uppercase; letter-spacing: .04em; color: var(--muted);
     font-weight: 600; white-space: nowrap; }
td.when, .nowrap { white-space: nowrap; }
td.num, th.num { text-align: right; }
td.rank { font-weight: 700; width: 48px; }
tr.top1 td.rank { color: #b8860b; } tr.top2 td.rank { color: #7d8791; } tr.top3 td.rank { color: #a0522d; }
td.team { font-weight: 600; max-width: 340px; overflow-wrap: anywhere; }
.score { display: flex; align-items: center; gap: 8px; justify-content: flex-end; }
.bar { width: 120px; height: 8px; background: #edf1f7; border-radius: 4px; overflow: hidden; }
.bar > span { display: block; height: 100%; background: var(--accent); }
.primary { font-weight: 700; }
.muted { color: var(--muted); }
.up { color: #0b7a33; } .down { color: #b42318; }
.rules { font-size: 13.5px; color: var(--muted); } .rules li { margin: 2px 0; }
form label { display: block; margin: 10px 0 4px; font-weight: 600; }
input[type=text], input[type=password] { width: 100%; max-width: 460px; padding: 7px 9px;
     border: 1px solid #c7cfdb; border-radius: 6px; font: inherit; }
button { display: block; margin-top: 14px; background: var(--accent); color: #fff; border: 0; border-radius: 6px;
         padding: 8px 16px; font: inherit; font-weight: 600; cursor: pointer; }
.ok { border-left: 4px solid #1a7f37; } .err { border-left: 4px solid #cf222e; }
.problems { font: 13px/1.5 ui-monospace, SFMono-Regular, Menlo, Consolas, monospace;
            white-space: pre-wrap; overflow-wrap: anywhere; }
.empty { color: var(--muted); padding: 18px 4px; }
.ci { font-size: 12.5px; white-space: nowrap; }
.noise { color: #7a5300; font-size: 12px; white-space: nowrap; }
td.wu { max-width: 360px; overflow-wrap: anywhere; }
details summary { cursor: pointer; color: var(--accent); }
.writeup { overflow-wrap: anywhere; unicode-bidi: isolate; }
.writeup h3, .writeup h4, .writeup h5, .writeup h6 { margin: 10px 0 4px; font-size: 15px; }
.writeup pre { background: #f3f5f8; padding: 8px 10px; border-radius: 6px; overflow-x: auto; white-space: pre-wrap; }
.writeup code { font: 13px ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; }
textarea { width: 100%; min-height: 220px; padding: 8px 9px; border: 1px solid #c7cfdb; border-radius: 6px;
           font: 13.5px/1.45 ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; }
figure { margin: 0 0 14px; } figure img { max-width: 100%; height: auto; }
footer { color: var(--muted); font-size: 12.5px; text-align: center; margin: 8px 0 28px; }
"""

TEMPLATES = {
    "base.html": """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{ title }} · {{ s.name }}</title>
<style>{{ css }}</style></head>
<body>
<header><h1>{{ s.name }}</h1>
{% if s.closed %}<span class="badge closed">Closed · final ranking</span>
{% elif s.deadline_passed %}<span class="badge frozen">Deadline passed</span>
{% else %}<span class="badge open">Open</span>{% endif %}
{% if nav %}<nav><a href="{{ url('board') }}">Leaderboard</a><a href="{{ url('submit') }}">Submit</a>
<a href="{{ url('team') }}">My submissions</a><a href="{{ url('host') }}">Host</a></nav>{% endif %}
</header>
<main>
{% block body %}{% endblock %}
</main>
<footer>TMR Kit leaderboard · generated {{ generated }}</footer>
</body></html>""",
    "macros.html": """
{% macro score(x, primary=False) -%}
<div class="score"><span class="{{ 'primary' if primary else '' }}">{{ fmt(x) }}</span>
{%- if primary and x is not none %}<span class="bar"><span style="width:{{ '%.1f' % (100 * x) }}%"></span></span>{% endif %}</div>
{%- endmacro %}
{% macro facts(s) -%}
<p class="facts"><b>Recall@20</b> ranks (MRR, then the earliest submission, break ties) ·
public board = <b>{{ s.n_public }}</b> of {{ s.n_test }} test queries ({{ '%d' % (100 * s.public_fraction + 0.5) }}%) ·
<b>{{ s.daily_limit }}</b> submissions per team per day, reset <b>{{ s.reset_utc }} UTC</b> ·
{% if s.deadline %}deadline <b>{{ short_time(s.deadline) }}</b>{% else %}no deadline set{% endif %}</p>
{%- endmacro %}
{% macro public_table(rows) -%}
{% if rows %}{% set iv = 'ci_low' in rows[0] %}
<table><thead><tr><th>#</th><th>Team</th><th class="num">Recall@20</th>{% if iv %}<th class="num">95 % interval</th>{% endif %}<th class="num">MRR</th>
<th class="num">Entries</th><th>Last submission</th></tr></thead><tbody>
{% for r in rows %}<tr class="top{{ r.rank }}"><td class="rank">{{ r.rank }}</td><td class="team">{{ r.team }}</td>
<td class="num">{{ score(r.recall20, True) }}</td>
{%- if iv %}<td class="num"><span class="ci">{% if r.ci_low is not none %}{{ fmt(r.ci_low) }} – {{ fmt(r.ci_high) }}{% else %}—{% endif %}</span>
{%- if r.within_noise_of_above %}<br><span class="noise">≈ #{{ r.rank - 1 }}: within noise</span>{% endif %}</td>{% endif %}
<td class="num">{{ fmt(r.mrr) }}</td>
<td class="num">{{ r.entries }}</td><td class="muted when">{{ short_time(r.last_submission) }}</td></tr>
{% endfor %}</tbody></table>
{% if iv %}<p class="rules">95 % interval: a bootstrap over the public queries ({{ n_resamples }} resamples,
seeded) of each team's public Recall@20. “≈ #n: within noise” means the paired interval of the gap to the team
ranked just above holds 0: on another sample of queries the order could flip.</p>{% endif %}
{% else %}<p class="empty">No submissions yet.</p>{% endif %}
{%- endmacro %}
{% macro writeup_cell(r) -%}
{% if r.writeup %}<details><summary>{{ r.writeup_title or 'Write-up' }}</summary>{{ md(r.writeup) }}</details>
{%- else %}<span class="muted">—</span>{% endif %}
{%- endmacro %}
{% macro private_table(rows) -%}
{% if rows %}{% set wu = rows|selectattr('writeup')|list %}
<table><thead><tr><th>#</th><th>Team</th><th class="num">Recall@20</th><th class="num">MRR</th>
<th class="num">Public R@20</th><th class="num">Public rank</th><th>Submission</th>{% if wu %}<th>Write-up</th>{% endif %}</tr></thead><tbody>
{% for r in rows %}<tr class="top{{ r.rank }}"><td class="rank">{{ r.rank }}</td><td class="team">{{ r.team }}</td>
<td class="num">{{ score(r.recall20, True) }}</td><td class="num">{{ fmt(r.mrr) }}</td>
<td class="num">{{ fmt(r.public_recall20) }}</td>
<td class="num nowrap">{{ r.public_rank }}{% if r.move %} <span class="{{ 'up' if r.move > 0 else 'down' }}">{{ '▲' if r.move > 0 else '▼' }}{{ r.move|abs }}</span>{% endif %}</td>
<td class="muted nowrap">#{{ r.submission_id }}{% if r.auto_selected %} · auto{% endif %}</td>
{%- if wu %}<td class="wu">{{ writeup_cell(r) }}</td>{% endif %}</tr>
{% endfor %}</tbody></table>
{% else %}<p class="empty">No submissions.</p>{% endif %}
{%- endmacro %}
{% macro history_table(rows, show_private, select_form=False) -%}
{% if rows %}
<table><thead><tr>{% if select_form %}<th>Final</th>{% endif %}<th>#</th><th>Submitted</th><th>File / note</th>
<th class="num">Public R@20</th><th class="num">MRR</th>
{% if show_private %}<th class="num">Private R@20</th><th class="num">MRR</th>{% endif %}
<th>R@20 by category</th></tr></thead><tbody>
{% for r in rows %}<tr>
{% if select_form %}<td><input type="checkbox" name="selected" value="{{ r.id }}"{{ ' checked' if r.selected }}></td>{% endif %}
<td>#{{ r.id }}{% if r.selected and not select_form %} ★{% endif %}</td>
<td class="muted when">{{ short_time(r.submitted_at) }}</td>
<td>{{ r.filename }}{% if r.note %}<br><span class="muted">{{ r.note }}</span>{% endif %}</td>
<td class="num primary">{{ fmt(r.public_recall) }}</td><td class="num">{{ fmt(r.public_mrr) }}</td>
{% if show_private %}<td class="num primary">{{ fmt(r.private_recall) }}</td><td class="num">{{ fmt(r.private_mrr) }}</td>{% endif %}
<td class="muted">{% for c, v in r.public_per_category.items() %}<span class="nowrap">{{ c }}: {{ fmt(v) }}</span>{{ ' · ' if not loop.last }}{% endfor %}</td>
</tr>{% endfor %}</tbody></table>
<p class="rules">Categories: 2 酷似 near-identical · 3 部分一致 partial match · 4 色彩相違 colour difference ·
5 向きの相違 orientation difference. Scores at 4 decimals; ★ = final selection.</p>
{% else %}<p class="empty">No submissions yet.</p>{% endif %}
{%- endmacro %}
""",
    "board.html": """{% extends "base.html" %}{% from "macros.html" import facts, public_table, private_table %}
{% block body %}
{{ facts(s) }}
{% if private is not none %}
<section><h2>Final ranking — private split ({{ s.n_private }} queries)</h2>
{{ private_table(private) }}
<p class="rules">Each team's best private score among its final selections (its best public
submission when it selected none: “auto”). ▲▼ = places gained or lost against the public board.</p></section>
{% endif %}
<section><h2>Public leaderboard{% if s.closed %} (at close){% endif %}</h2>
{{ public_table(public) }}
<p class="rules">{{ s.n_teams }} team{{ 's' if s.n_teams != 1 }} registered · best submission per team ·
scores rounded to 4 decimals{% if not s.closed %} · the private ranking is revealed when the host closes the competition{% endif %}.</p>
</section>
{% if nav %}<section><h2>Rules</h2><ul class="rules">
<li>A submission is a CSV with the header <code>gid,cite_gid</code>, every test gid exactly once and
20 distinct cite gids per row separated by single spaces. Files that fail the check are rejected
with every problem listed, and cost nothing.</li>
<li>{{ s.daily_limit }} scored submissions per team per UTC day; the count resets at {{ s.reset_utc }} UTC
(next: {{ short_time(s.next_reset) }}).</li>
<li>Select up to {{ s.n_final }} submissions for the final ranking under “My submissions”; without a
selection your best public submission counts.</li>
<li>Ranking: Recall@20 (higher first), then MRR, then the earlier submission.</li>
<li>{{ s.writeups_note }} Markdown, at most {{ s.max_writeup_bytes // 1024 }} kB, under “My submissions”; shown beside
the final ranking.</li></ul></section>{% endif %}
{% endblock %}""",
    "form.html": """{% extends "base.html" %}{% block body %}
{% if message %}<section class="{{ message_class }}"><h2>{{ message_title }}</h2>
{% if message_lines %}<div class="problems">{% for line in message_lines %}{{ line }}
{% endfor %}</div>{% endif %}</section>{% endif %}
{% if form == 'submit' %}
<section><h2>Submit a top-20 CSV</h2>
<form method="post" action="{{ url('submit') }}" enctype="multipart/form-data">
<label for="token">Team token</label><input type="password" id="token" name="token" autocomplete="current-password" required>
<label for="file">Submission file (CSV, at most {{ '%.0f' % (s.max_bytes / 1048576) }} MB)</label>
<input type="file" id="file" name="file" accept=".csv,text/csv" required>
<label for="note">Note (optional, shown in your history)</label><input type="text" id="note" name="note" maxlength="200">
<button type="submit">Submit</button></form>
<p class="rules">{{ s.daily_limit }} per day, reset {{ s.reset_utc }} UTC. Invalid files are rejected with every problem listed and do not count.</p>
</section>
{% elif form == 'token' %}
<section><h2>{{ form_title }}</h2>
<form method="post" action="{{ action }}">
<label for="token">{{ token_label }}</label><input type="password" id="token" name="token" autocomplete="current-password" required>
<button type="submit">Show</button></form></section>
{% endif %}
{% endblock %}""",
    "team.html": """{% extends "base.html" %}{% from "macros.html" import history_table %}{% block body %}
{% if message %}<section class="{{ message_class }}"><h2>{{ message_title }}</h2>
{% if message_lines %}<div class="problems">{% for line in message_lines %}{{ line }}
{% endfor %}</div>{% endif %}</section>{% endif %}
<section><h2>Submissions of {{ team }}</h2>
<p class="facts">{% if s.closed %}The competition closed at {{ short_time(s.closed_at) }}: the final ranking is on the
leaderboard page.{% elif s.deadline_passed %}The deadline has passed: no more submissions. {{ selection_note }}{% else %}
<b>{{ remaining }}</b> of {{ s.daily_limit }} submissions left today · resets {{ short_time(s.next_reset) }} ·
{{ selection_note }}{% endif %}</p>
{% if rows and not s.closed %}
<form method="post" action="{{ url('select') }}"><input type="hidden" name="token" value="{{ token }}">
{{ history_table(rows, show_private, True) }}
<button type="submit">Save final selection (up to {{ s.n_final }})</button></form>
{% else %}{{ history_table(rows, show_private) }}{% endif %}
</section>
<section><h2>Write-up</h2>
<p class="facts">{{ s.writeups_note }}{% if writeup %} Saved {{ short_time(writeup.written_at) }} (attached to
submission #{{ writeup.submission_id }}).{% endif %}</p>
{% if writeup %}{{ md(writeup.body) }}{% endif %}
{% if s.writeups_are_open and rows %}
<form method="post" action="{{ url('writeup_post') }}"><input type="hidden" name="token" value="{{ token }}">
<label for="text">Markdown (headings, paragraphs, *emphasis*, `code`, lists, [links](https://…); no HTML;
at most {{ s.max_writeup_bytes // 1024 }} kB)</label>
<textarea id="text" name="text" maxlength="{{ s.max_writeup_bytes }}" required>{{ writeup.body if writeup else '' }}</textarea>
<button type="submit">Save write-up</button></form>
{% elif s.writeups_are_open %}<p class="rules">Submit first: the write-up is attached to your final submission.</p>{% endif %}
</section>{% endblock %}""",
    "host.html": """{% extends "base.html" %}{% from "macros.html" import facts, private_table, public_table %}{% block body %}
{{ facts(s) }}
<section class="err"><h2>Host view — private ranking{% if not s.closed %} (hidden from teams until you close){% endif %}</h2>
{{ private_table(private) }}
<p class="rules">{{ s.writeups_note }} Public intervals: {{ 'on' if s.public_intervals else 'off' }}
(<code>python -m leaderboard intervals on|off</code>).</p></section>
{% if plots %}<section><h2>The race</h2>
{% for name, uri in plots.items() %}<figure><img src="{{ uri }}" alt="{{ plot_titles[name] }}"></figure>{% endfor %}
{% if not s.closed %}<p class="rules">Public scores only; the shake-up (public rank → private rank) is drawn after close.</p>{% endif %}
</section>{% endif %}
<section><h2>Public leaderboard</h2>{{ public_table(public) }}</section>
<section><h2>Teams</h2><table><thead><tr><th>Team</th><th class="num">Entries</th><th>Last submission</th></tr></thead><tbody>
{% for t in teams %}<tr><td class="team">{{ t.name }}</td><td class="num">{{ t.entries }}</td><td class="muted">{{ short_time(t.last) }}</td></tr>{% endfor %}
</tbody></table></section>
<section><h2>Recent events</h2><table><thead><tr><th>Time</th><th>Actor</th><th>Action</th><th>Team</th><th>Submission</th></tr></thead><tbody>
{% for e in events %}<tr><td class="muted">{{ short_time(e.at) }}</td><td>{{ e.actor }}</td><td>{{ e.action }}</td><td>{{ e.team or '' }}</td><td>{{ ('#' ~ e.submission_id) if e.submission_id else '' }}</td></tr>{% endfor %}
</tbody></table></section>{% endblock %}""",
}

_env = Environment(loader=DictLoader(TEMPLATES), autoescape=select_autoescape(default=True, default_for_string=True))
_env.globals.update(fmt=fmt, short_time=short_time, css=Markup(CSS),  # our own constant CSS
                    md=render_markdown, n_resamples=N_RESAMPLES)


def _static_url(name: str, **_: Any) -> str:
    return "#"


def render(template: str, comp: Competition, *, url=None, nav: bool = True, **ctx: Any) -> str:
    from .core import iso, utcnow

    ctx.setdefault("title", "Leaderboard")
    return _env.get_template(template).render(
        s=comp.settings(), url=url or _static_url, nav=nav, generated=short_time(iso(utcnow())), **ctx
    )


def board_html(comp: Competition, *, private: bool | None = None, url=None, nav: bool = False) -> str:
    """A full HTML page of the board. ``private``: include the final ranking (default: once closed)."""
    if private is None:
        private = comp.is_closed()
    priv = comp.private_board(host=True) if private else None
    return render("board.html", comp, url=url, nav=nav, public=comp.public_board(), private=priv)


def board_fragment(comp: Competition) -> str:
    """The board table(s) alone with the page's CSS, for a notebook widget."""
    page = board_html(comp)
    start = page.index("<main>") + len("<main>")
    end = page.index("</main>")
    return f"<style>{CSS.replace('body {', '.tmr-board {')}</style><div class='tmr-board'>{page[start:end]}</div>"


# ----------------------------------------------------------------------------------------
# CSV export
# ----------------------------------------------------------------------------------------
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "\n", "＝", "＋", "－", "＠")


def csv_safe(value: Any) -> Any:
    """Neutralise a text cell a spreadsheet would evaluate (OWASP: prefix with a quote)."""
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


def board_rows(comp: Competition, private: bool) -> tuple[list[str], list[list[Any]]]:
    if private:
        header = ["rank", "team", "private_recall20", "private_mrr", "public_recall20", "public_rank",
                  "submission_id", "auto_selected", "submitted_at", "writeup_title"]
        rows = [[r["rank"], r["team"], fmt(r["recall20"]), fmt(r["mrr"]), fmt(r["public_recall20"]),
                 r["public_rank"], r["submission_id"], r["auto_selected"], r["submitted_at"], r["writeup_title"]]
                for r in comp.private_board(host=True)]
        return header, rows
    board = comp.public_board()
    header = ["rank", "team", "public_recall20", "public_mrr", "entries", "last_submission"]
    rows = [[r["rank"], r["team"], fmt(r["recall20"]), fmt(r["mrr"]), r["entries"], r["last_submission"]]
            for r in board]
    if comp.settings()["public_intervals"]:
        header += ["public_recall20_low95", "public_recall20_high95", "within_noise_of_above"]
        for row, r in zip(rows, board):
            row += [fmt(r.get("ci_low")) if r.get("ci_low") is not None else "",
                    fmt(r.get("ci_high")) if r.get("ci_high") is not None else "",
                    "" if r.get("within_noise_of_above") is None else r["within_noise_of_above"]]
    return header, rows


def board_csv(comp: Competition, private: bool = False) -> str:
    header, rows = board_rows(comp, private)
    buf = io.StringIO()
    w = csv.writer(buf, quoting=csv.QUOTE_ALL, lineterminator="\r\n")
    w.writerow(header)
    w.writerows([[csv_safe(v) for v in row] for row in rows])
    return buf.getvalue()


def _atomic_write(path: Path, text: str, encoding: str = "utf-8") -> None:
    atomic_write_bytes(path, text.encode(encoding))


def export(comp: Competition, out_dir: str | os.PathLike, private: bool | None = None,
           plots: bool = True) -> list[Path]:
    """Write board.html and public_board.csv (+ private_board.csv and booklet.html once closed
    or if asked), then the race plots (race_*.png; the shake-up only after close).

    Before close and without ``private=True`` nothing written holds a private score.
    """
    out = Path(out_dir)
    if private is None:
        private = comp.is_closed()
    written = _export_tables(comp, out, private)
    pngs: dict[str, bytes] = {}
    if plots:
        from .plots import race_pngs

        pngs = race_pngs(comp)
    if private:
        from .booklet import booklet_html

        p = out / "booklet.html"
        _atomic_write(p, booklet_html(comp, pngs.get("shakeup")))
        written.append(p)
    for name, png in pngs.items():
        p = out / f"race_{name}.png"
        atomic_write_bytes(p, png)
        written.append(p)
    return written


def _export_tables(comp: Competition, out: Path, private: bool) -> list[Path]:
    written = []
    p = out / "board.html"
    _atomic_write(p, board_html(comp, private=private))
    written.append(p)
    p = out / "public_board.csv"
    _atomic_write(p, board_csv(comp, private=False), encoding="utf-8-sig")  # BOM: Excel reads UTF-8
    written.append(p)
    if private:
        p = out / "private_board.csv"
        _atomic_write(p, board_csv(comp, private=True), encoding="utf-8-sig")
        written.append(p)
    return written
