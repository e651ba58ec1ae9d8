"""The host's view of the race: PNG plots for the host page and ``export``.

* ``submissions_per_day``: scored submissions per UTC day, stacked by team;
* ``best_public``: each team's best public Recall@20 over time (a step per improvement);
* ``shakeup`` (only once the competition is closed): public rank -> private rank per team.

The first two are drawn from :meth:`Competition.race`, which carries public scores only, so
they cannot show a private score; the shake-up is drawn only after ``close``, from the
revealed private board. Figures are built without pyplot (thread-safe figure objects); a lock
serialises the global font settings. Team names are drawn as plain text (``$`` escaped so
matplotlib never reads them as math) and clipped.
"""

from __future__ import annotations

import io
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import TYPE_CHECKING, Any

from .rules import parse_time

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure

    from .core import Competition

_LOCK = threading.Lock()
PLOTS = ("submissions_per_day", "best_public", "shakeup")
TITLES = {
    "submissions_per_day": "Submissions per day",
    "best_public": "Best public Recall@20 over time",
    "shakeup": "Shake-up: public rank → private rank",
}


def label(name: str, n: int = 24) -> str:
    """A team name safe for a matplotlib label: printable, no math, clipped."""
    text = "".join(c if c.isprintable() else "?" for c in str(name)).replace("$", r"\$")
    return text if len(text) <= n else text[: n - 1] + "…"


@contextmanager
def _style() -> Iterator[None]:
    """Fonts with Japanese glyphs when available; missing glyphs (emoji) warn nothing."""
    import matplotlib
    from matplotlib import font_manager

    try:  # registers IPAexGothic as the default font, as tmr_lib.viz does (the kit's one font setting)
        import matplotlib_fontja  # noqa: F401
    except ImportError:  # pragma: no cover - the font is a nicety
        pass
    with _LOCK, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        names = {f.name for f in font_manager.fontManager.ttflist}
        family = [f for f in ("IPAexGothic", "DejaVu Sans") if f in names] or ["sans-serif"]
        with matplotlib.rc_context({"font.family": family, "font.size": 9, "axes.spines.top": False,
                                    "axes.spines.right": False}):
            yield


def _figure(w: float, h: float) -> "Figure":
    from matplotlib.figure import Figure

    return Figure(figsize=(w, h), dpi=100, layout="constrained")


def _png(fig: "Figure") -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    return buf.getvalue()


def _colours(race: list[dict[str, Any]]) -> dict[int, Any]:
    from matplotlib import colormaps

    cmap = colormaps["tab20" if len({r["team_id"] for r in race}) > 10 else "tab10"]
    ids = sorted({r["team_id"] for r in race})
    return {tid: cmap(i % cmap.N) for i, tid in enumerate(ids)}


def _empty(ax: Any, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="#5b6575")
    ax.set_xticks([])
    ax.set_yticks([])


def submissions_per_day(race: list[dict[str, Any]]) -> bytes:
    """Stacked bars: scored submissions per UTC day and team."""
    with _style():
        fig = _figure(7.5, 3.2)
        ax = fig.add_subplot()
        ax.set_title(TITLES["submissions_per_day"], loc="left", fontsize=11)
        if not race:
            _empty(ax, "no submissions yet")
            return _png(fig)
        days = sorted({parse_time(r["submitted_at"]).date() for r in race})
        colours, names = _colours(race), {r["team_id"]: r["team"] for r in race}
        bottom = [0] * len(days)
        for tid in sorted(names):
            counts = [sum(1 for r in race if r["team_id"] == tid and parse_time(r["submitted_at"]).date() == d)
                      for d in days]
            ax.bar(range(len(days)), counts, bottom=bottom, color=colours[tid], label=label(names[tid]), width=0.75)
            bottom = [b + c for b, c in zip(bottom, counts)]
        step = max(1, len(days) // 12)
        ax.set_xticks(range(0, len(days), step), [d.strftime("%m-%d") for d in days[::step]])
        ax.set_ylabel("submissions")
        ax.yaxis.get_major_locator().set_params(integer=True)
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False, fontsize=8)
        return _png(fig)


def _running_best(rows: list[dict[str, Any]]) -> tuple[list[datetime], list[float]]:
    """The times a team's best public score improved, and the score from then on."""
    times, values, best = [], [], None
    for r in sorted(rows, key=lambda x: (x["submitted_at"], x["id"])):
        key = (r["public_recall"] or 0.0, r["public_mrr"] or 0.0)
        if best is None or key > best:
            best = key
            times.append(parse_time(r["submitted_at"]))
            values.append(key[0])
    return times, values


def best_public_over_time(race: list[dict[str, Any]]) -> bytes:
    """One step line per team: its best public Recall@20 so far (public scores only)."""
    with _style():
        fig = _figure(7.5, 3.6)
        ax = fig.add_subplot()
        ax.set_title(TITLES["best_public"], loc="left", fontsize=11)
        if not race:
            _empty(ax, "no submissions yet")
            return _png(fig)
        colours, names = _colours(race), {r["team_id"]: r["team"] for r in race}
        end = max(parse_time(r["submitted_at"]) for r in race)
        for tid in sorted(names):
            times, values = _running_best([r for r in race if r["team_id"] == tid])
            ax.step(times + [end], values + [values[-1]], where="post", color=colours[tid], label=label(names[tid]))
            ax.plot(times, values, "o", color=colours[tid], markersize=3.5)
        from matplotlib.dates import AutoDateLocator, ConciseDateFormatter

        locator = AutoDateLocator()
        ax.xaxis.set_major_locator(locator)
        ax.xaxis.set_major_formatter(ConciseDateFormatter(locator))
        ax.set_ylabel("best public Recall@20")
        ax.grid(axis="y", color="#e3e7ee")
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False, fontsize=8)
        return _png(fig)


def shakeup(private_rows: list[dict[str, Any]]) -> bytes:
    """A slope chart from each team's public rank to its private (final) rank."""
    rows = [r for r in private_rows if r.get("public_rank")]
    with _style():
        fig = _figure(6.0, max(2.6, 0.32 * len(rows) + 1.4))
        ax = fig.add_subplot()
        ax.set_title(TITLES["shakeup"], loc="left", fontsize=11)
        if not rows:
            _empty(ax, "no submissions")
            return _png(fig)
        for r in rows:
            move = r["public_rank"] - r["rank"]
            colour = "#0b7a33" if move > 0 else "#b42318" if move < 0 else "#7d8791"
            ax.plot([0, 1], [r["public_rank"], r["rank"]], "-o", color=colour, linewidth=1.6, markersize=4)
            ax.text(-0.04, r["public_rank"], label(r["team"], 20), ha="right", va="center", fontsize=8)
            ax.text(1.04, r["rank"], f"#{r['rank']} {label(r['team'], 20)}", ha="left", va="center", fontsize=8)
        n = max(max(r["public_rank"] for r in rows), max(r["rank"] for r in rows))
        ax.set_ylim(n + 0.6, 0.4)
        ax.set_xlim(-0.9, 1.9)
        ax.set_xticks([0, 1], ["public rank", "private rank"])
        ax.set_yticks([])
        for side in ("left", "bottom"):
            ax.spines[side].set_visible(False)
        return _png(fig)


def race_pngs(comp: "Competition") -> dict[str, bytes]:
    """The plots a host sees now: the race always, the shake-up only after close."""
    race = comp.race()
    out = {"submissions_per_day": submissions_per_day(race), "best_public": best_public_over_time(race)}
    if comp.is_closed():
        out["shakeup"] = shakeup(comp.private_board())
    return out


def data_uri(png: bytes) -> str:
    import base64

    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")
