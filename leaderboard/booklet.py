"""The solutions booklet: one self-contained HTML file a host hands round after close.

A cover (the final ranking, the shake-up plot) and one page per team in private-rank order:
its final scores, Recall@20 per category on both splits, and its write-up. Inline CSS, the
plot as a data URI, a strict Content-Security-Policy meta tag and no script: opened from a
disk or a mail, it makes no request. Printing puts each team on its own page.

Every name and write-up is escaped (Jinja2 autoescape; write-ups through the safe Markdown
subset of :mod:`leaderboard.markdown`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from jinja2 import Environment, select_autoescape
from markupsafe import Markup

from .markdown import render_markdown
from .rules import iso, short_time, utcnow
from .scorer import fmt

if TYPE_CHECKING:  # pragma: no cover
    from .core import Competition

BOOKLET_CSP = ("default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; "
               "form-action 'none'")
CATEGORY_LABELS = {"2": "2 酷似 near-identical", "3": "3 部分一致 partial match",
                   "4": "4 色彩相違 colour difference", "5": "5 向きの相違 orientation difference"}

CSS = """
* { box-sizing: border-box; }
body { font: 14.5px/1.5 -apple-system, "Segoe UI", "Helvetica Neue", Arial, "Hiragino Sans", "Noto Sans CJK JP",
       "Yu Gothic", Meiryo, sans-serif; color: #1d2430; background: #f6f8fb; margin: 0; }
main { max-width: 860px; margin: 0 auto; padding: 24px 20px; }
section { background: #fff; border: 1px solid #e3e7ee; border-radius: 10px; padding: 18px 24px; margin-bottom: 22px; }
h1 { font-size: 24px; margin: 0 0 4px; } h2 { font-size: 19px; margin: 0 0 6px; }
.muted { color: #5b6575; } .banner { background: #ffe3e0; color: #9b1c13; font-weight: 600; padding: 8px 12px;
  border-radius: 6px; }
table { border-collapse: collapse; width: 100%; font-variant-numeric: tabular-nums; margin: 8px 0 12px; }
th, td { padding: 5px 8px; border-bottom: 1px solid #e3e7ee; text-align: left; }
th { font-size: 12px; text-transform: uppercase; letter-spacing: .04em; color: #5b6575; }
td.num, th.num { text-align: right; } td.team { font-weight: 600; overflow-wrap: anywhere; }
.scores { display: flex; gap: 28px; flex-wrap: wrap; margin: 8px 0; }
.scores div b { display: block; font-size: 22px; }
.writeup { overflow-wrap: anywhere; unicode-bidi: isolate; border-top: 1px solid #e3e7ee; padding-top: 8px; }
.writeup pre { background: #f3f5f8; padding: 8px 10px; border-radius: 6px; white-space: pre-wrap; }
img { max-width: 100%; height: auto; }
@page { size: A4; margin: 14mm; }
@media print {
  body { background: #fff; } main { max-width: none; padding: 0; }
  section { border: 0; padding: 0; margin: 0; }
  section.team { break-before: page; page-break-before: always; }
  a { color: inherit; }
}
"""

TEMPLATE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{{ csp }}">
<meta name="referrer" content="no-referrer">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{ s.name }} · solutions booklet</title><style>{{ css }}</style></head>
<body><main>
<section class="cover"><h1>{{ s.name }} — solutions booklet</h1>
{% if not s.closed %}<p class="banner">HOST ONLY — provisional: the competition is not closed, teams cannot see
the private ranking yet. Do not hand this round.</p>{% endif %}
<p class="muted">{% if s.closed %}Closed {{ short_time(s.closed_at) }}{% endif %} · {{ rows|length }} teams ·
final ranking on the private split ({{ s.n_private }} of {{ s.n_test }} test queries) · Recall@20 ranks, then MRR,
then the earlier submission · generated {{ generated }}</p>
<table><thead><tr><th>#</th><th>Team</th><th class="num">Recall@20</th><th class="num">MRR</th>
<th class="num">Public rank</th><th>Write-up</th></tr></thead><tbody>
{% for r in rows %}<tr><td>{{ r.rank }}</td><td class="team">{{ r.team }}</td><td class="num">{{ fmt(r.recall20) }}</td>
<td class="num">{{ fmt(r.mrr) }}</td><td class="num">{{ r.public_rank or '—' }}</td>
<td>{{ r.writeup_title or '—' }}</td></tr>{% endfor %}</tbody></table>
{% if shakeup %}<img src="{{ shakeup }}" alt="Shake-up: public rank to private rank">{% endif %}
</section>
{% for r in rows %}<section class="team" id="rank-{{ r.rank }}">
<h2>#{{ r.rank }} · {{ r.team }}</h2>
<div class="scores"><div>private Recall@20<b>{{ fmt(r.recall20) }}</b></div><div>private MRR<b>{{ fmt(r.mrr) }}</b></div>
<div>public Recall@20<b>{{ fmt(r.public_recall20) }}</b></div>
<div>public rank<b>{{ r.public_rank or '—' }}{% if r.move %} ({{ '+' if r.move > 0 }}{{ r.move }}){% endif %}</b></div></div>
<p class="muted">Submission #{{ r.submission_id }}{% if r.auto_selected %} (no selection: its best public one){% endif %}
· {{ short_time(r.submitted_at) }} · {{ r.entries }} submission{{ 's' if r.entries != 1 }} in all</p>
<table><thead><tr><th>Recall@20 by category</th><th class="num">private</th><th class="num">public</th></tr></thead><tbody>
{% for c, name in categories.items() %}{% if c in r.private_per_category or c in r.public_per_category %}
<tr><td>{{ name }}</td><td class="num">{{ fmt(r.private_per_category.get(c)) }}</td>
<td class="num">{{ fmt(r.public_per_category.get(c)) }}</td></tr>{% endif %}{% endfor %}</tbody></table>
{% if r.writeup %}{{ md(r.writeup) }}{% else %}<p class="muted">No write-up.</p>{% endif %}
</section>{% endfor %}
</main></body></html>"""

_env = Environment(autoescape=select_autoescape(default=True, default_for_string=True))
_env.globals.update(fmt=fmt, short_time=short_time, md=render_markdown, css=Markup(CSS), csp=Markup(BOOKLET_CSP),
                    categories=CATEGORY_LABELS)
_TEMPLATE = _env.from_string(TEMPLATE)


def booklet_html(comp: "Competition", shakeup_png: bytes | None = None) -> str:
    """The booklet for ``comp`` (the host's: before close it is marked provisional, without the shake-up)."""
    from .plots import data_uri, shakeup

    rows: list[dict[str, Any]] = comp.private_board(host=True)
    s = comp.settings()
    if s["closed"] and shakeup_png is None:
        shakeup_png = shakeup(rows)
    return _TEMPLATE.render(
        s=s, rows=rows, shakeup=data_uri(shakeup_png) if s["closed"] and shakeup_png else "",
        generated=short_time(iso(utcnow())))
