"""``python -m leaderboard`` / ``tmr-leaderboard``: the host's and the teams' command line."""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
import unicodedata
from pathlib import Path

from .core import (
    Competition,
    DatabaseBusy,
    InvalidSubmission,
    InvalidWriteup,
    LeaderboardError,
    WriteupsNotOpen,
    find_competition,
    short_time,
)
from .scorer import fmt
from .errors import StorageError
from .storage import DB_NAME, default_wait, exposed_to_others, is_busy_error, storage_error

#: Exit codes: each means one thing (also in the --help epilog and leaderboard/README.md).
EXIT_OK, EXIT_REJECTED, EXIT_REFUSED, EXIT_BUSY, EXIT_PROBLEMS, EXIT_NOT_YET, EXIT_STORAGE = 0, 1, 2, 3, 4, 5, 6

EPILOG = """\
examples:
  python -m leaderboard init data/tmr-cpu-host --team alpha --team beta --deadline 2025-03-14T09:00Z
  python -m leaderboard add-team gamma
  python -m leaderboard submit submission.csv --team alpha --note "mobilenet 128px"
  python -m leaderboard show
  python -m leaderboard history --team alpha
  python -m leaderboard select --team alpha 3 7
  python -m leaderboard serve --port 8000          # http://127.0.0.1:8000/
  python -m leaderboard close
  python -m leaderboard writeup notes.md --team alpha   # after close (or from --writeups-open)
  python -m leaderboard export --out handouts/board     # + booklet.html and the race plots

Every command but init finds the competition with --dir, else $TMR_LEADERBOARD, else the
only competition under ./competitions.

exit codes: 0 done; 1 the file was rejected (every problem printed; a write-up: empty or over
8 kB); 2 refused (daily limit, closed, unknown team, bad arguments); 3 the database was busy
(another process held its write lock longer than --wait seconds: nothing recorded, no quota
used, try again); 4 verify found problems; 5 not open yet (write-ups before the host's time or
close: the message says when); 6 the leaderboard could not write its files (disk full, read-only
folder, I/O error: nothing recorded, no quota used; free space or fix the folder, then verify).
Rules: Recall@20 ranks, MRR then the earliest submission break ties; public scores are rounded to
4 decimals; the private ranking stays hidden until `close`.
"""


def _width(text: str) -> int:
    """Columns a string takes in a terminal (CJK and emoji count two)."""
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 0 if unicodedata.combining(c) else 1
               for c in text)


def _pad(text: str, width: int, right: bool) -> str:
    fill = " " * max(0, width - _width(text))
    return fill + text if right else text + fill


def _table(rows: list[list[str]], header: list[str], right: set[int] = frozenset()) -> str:
    cells = [[str(v) for v in r] for r in [header] + rows]
    widths = [max(_width(r[i]) for r in cells) for i in range(len(header))]

    def line(r: list[str]) -> str:
        return "  ".join(_pad(v, w, i in right) for i, (v, w) in enumerate(zip(r, widths))).rstrip()

    return "\n".join([line(cells[0]), line(["-" * w for w in widths])] + [line(r) for r in cells[1:]])


def _clip(text: str, n: int = 32) -> str:
    text = "".join(c if c.isprintable() else "?" for c in text)
    return text if len(text) <= n else text[: n - 1] + "…"


def print_public(comp: Competition) -> None:
    s = comp.settings()
    state = "CLOSED" if s["closed"] else ("deadline passed" if s["deadline_passed"] else "open")
    print(f"{s['name']} — public leaderboard ({s['n_public']} of {s['n_test']} queries) [{state}]")
    board = comp.public_board()
    rows = [[r["rank"], _clip(r["team"]), fmt(r["recall20"]), fmt(r["mrr"]), r["entries"],
             short_time(r["last_submission"])] for r in board]
    header, right = ["#", "team", "Recall@20", "MRR", "entries", "last submission"], {0, 2, 3, 4}
    if s["public_intervals"]:
        for row, r in zip(rows, board):
            ci = f"{fmt(r['ci_low'])}–{fmt(r['ci_high'])}" if r.get("ci_low") is not None else "—"
            row[3:3] = [ci, f"≈ #{r['rank'] - 1}" if r.get("within_noise_of_above") else ""]
        header[3:3], right = ["95% interval", "noise"], {0, 2, 3, 5, 6}
    if rows:
        print(_table(rows, header, right))
        if s["public_intervals"]:
            print("95% interval: bootstrap over the public queries; ≈ #n = within noise of the team above")
    else:
        print("  no submissions yet")
    print(f"{s['daily_limit']} submissions per team per day, reset {s['reset_utc']} UTC"
          + (f"; deadline {short_time(s['deadline'])}" if s["deadline"] else ""))


def print_private(comp: Competition, host: bool = False) -> None:
    s = comp.settings()
    title = "final ranking" if s["closed"] else "HOST ONLY: private ranking (teams cannot see it until close)"
    print(f"{s['name']} — {title} (private split, {s['n_private']} queries)")
    rows = []
    for r in comp.private_board(host=host):
        move = "" if not r["move"] else (f"+{r['move']}" if r["move"] > 0 else str(r["move"]))
        rows.append([r["rank"], _clip(r["team"]), fmt(r["recall20"]), fmt(r["mrr"]), fmt(r["public_recall20"]),
                     f"{r['public_rank']} {move}".strip(),
                     f"#{r['submission_id']}" + (" (auto)" if r["auto_selected"] else ""),
                     _clip(r["writeup_title"], 40) if r["writeup_title"] else "—"])
    if rows:
        print(_table(rows, ["#", "team", "Recall@20", "MRR", "public R@20", "public rank", "submission",
                            "write-up"], {0, 2, 3, 4, 5}))
    else:
        print("  no submissions")


def cmd_init(a: argparse.Namespace) -> int:
    comp, tokens = Competition.create(
        a.host_dir, a.data, a.dir, name=a.name, public_fraction=a.public_fraction, seed=a.seed,
        daily_limit=a.daily_limit, reset_utc=a.reset_utc, n_final=a.final, deadline=a.deadline, teams=a.team,
        reject_limit=a.reject_limit, reject_window=a.reject_window,
        writeups_open=a.writeups_open, public_intervals=a.intervals,
    )
    s = comp.settings()
    print(f"Created competition {s['name']!r} in {comp.path}")
    print(f"  {s['n_test']} test queries: {s['n_public']} public, {s['n_private']} private; {s['n_cite']} cites")
    print(f"  {s['daily_limit']} submissions per team per day (reset {s['reset_utc']} UTC); "
          f"{s['n_final']} final selections; deadline: {short_time(s['deadline']) if s['deadline'] else 'none'}")
    print(f"  write-ups: {s['writeups_note']} Public 95% intervals: {'on' if s['public_intervals'] else 'off'}.")
    print("Tokens (shown once; only their hashes are stored; re-issue with add-team NAME --reset-token):")
    for who, tok in tokens.items():
        print(f"  {'HOST' if who == 'host' else who}: {tok}")
    print(f"Keep {comp.path} private: it holds the answers.")
    _warn_exposed(comp, Path(a.host_dir))
    return 0


def _warn_exposed(comp: Competition, host_dir: Path | None = None) -> None:
    """Warn (stderr) when the host folder or the competition folder is readable by other users."""
    if host_dir is None:
        src = comp.meta().get("source_host_dir")
        host_dir = Path(src) if src else None
    for folder, files in ((host_dir, ("answers.csv",)), (comp.path, (DB_NAME, "log.jsonl"))):
        why = exposed_to_others(folder, files) if folder is not None else ""
        if why:
            print(f"warning: {why}", file=sys.stderr)


def cmd_add_team(a):
    comp = find_competition(a.dir, wait=a.wait)
    for name in a.name:
        tok = comp.add_team(name, reset_token=a.reset_token)
        print(f"{'new token for' if a.reset_token else 'added team'} {name}: {tok}")
    return 0


def cmd_host_token(a):
    comp = find_competition(a.dir, wait=a.wait)
    print(f"new host token: {comp.reset_host_token()} (the old one no longer works)")
    return 0


def cmd_teams(a):
    comp = find_competition(a.dir, wait=a.wait)
    rows = [[t["id"], _clip(t["name"]), t["entries"], short_time(t["last"])] for t in comp.teams()]
    print(_table(rows, ["id", "team", "entries", "last submission"], {0, 2}) if rows else "no teams yet")
    return 0


def cmd_submit(a):
    comp = find_competition(a.dir, wait=a.wait)
    try:
        res = comp.submit(a.file, a.team, note=a.note or "", via="cli")
    except InvalidSubmission as exc:
        print(exc.report.format(), file=sys.stderr)
        return 1
    print(res.summary())
    return 0


def cmd_check(a):
    comp = find_competition(a.dir, wait=a.wait)
    report = comp.validate(a.file, filename=Path(a.file).name)
    print(report.format())
    return 0 if report.ok else 1


def cmd_show(a):
    comp = find_competition(a.dir, wait=a.wait)
    if a.json:
        out = {"settings": {k: v for k, v in comp.settings().items()}, "public": comp.public_board()}
        if comp.is_closed() or a.private:
            out["private"] = comp.private_board(host=True)
        print(json.dumps(out, indent=2, ensure_ascii=False))
        return 0
    if comp.is_closed() or a.private:
        print_private(comp, host=True)
        print()
    print_public(comp)
    return 0


def cmd_history(a):
    comp = find_competition(a.dir, wait=a.wait)
    t = comp.team(a.team)
    hist = comp.history(team_id=t["id"])
    closed = comp.is_closed()
    rows = []
    for r in hist:
        row = [f"#{r['id']}" + (" *" if r["selected"] else ""), short_time(r["submitted_at"]),
               _clip(r["filename"], 24), fmt(r["public_recall"]), fmt(r["public_mrr"])]
        if closed:
            row += [fmt(r["private_recall"]), fmt(r["private_mrr"])]
        row.append(_clip(r["note"], 30))
        rows.append(row)
    header = ["id", "submitted", "file", "public R@20", "public MRR"]
    if closed:
        header += ["private R@20", "private MRR"]
    header.append("note")
    print(f"{t['name']}: {len(hist)} submissions (* = final selection)")
    if rows:
        print(_table(rows, header, {3, 4, 5, 6} if closed else {3, 4}))
    s = comp.settings()
    if s["closed"]:
        print(f"The competition closed at {short_time(s['closed_at'])}; see `show` for the final ranking.")
    else:
        left = "" if s["deadline_passed"] else (
            f"{max(0, s['daily_limit'] - comp.used_today(t['id']))} of {s['daily_limit']} left today "
            f"(resets {short_time(s['next_reset'])}). ")
        print(left + comp.selection_note(t["id"]))
    return 0


def cmd_select(a):
    comp = find_competition(a.dir, wait=a.wait)
    t = comp.team(a.team)
    ids = [] if a.clear else a.ids
    if not a.clear and not ids:
        raise LeaderboardError("give submission numbers (see `history --team NAME`) or --clear")
    comp.select(None, ids, team_id=t["id"], actor="cli")
    print(comp.selection_note(t["id"]))
    return 0


def cmd_close(a):
    comp = find_competition(a.dir, wait=a.wait)
    if not a.yes:
        if not sys.stdin.isatty():
            raise LeaderboardError("closing is final: pass --yes to confirm")
        answer = input(f"Close {comp.name!r} for good and reveal the private ranking? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            print("not closed")
            return EXIT_REFUSED
    comp.close()
    print_private(comp)
    return 0


def cmd_export(a):
    comp = find_competition(a.dir, wait=a.wait)
    from .render import export

    out = a.out or (comp.path / "export")
    for p in export(comp, out, private=True if a.private else None):
        print(f"wrote {p}")
    if not comp.is_closed() and not a.private:
        print("(booklet.html and the shake-up plot are written after close; nothing written holds a private score)")
    return 0


def cmd_serve(a):
    comp = find_competition(a.dir, wait=a.wait)
    path = comp.path
    _warn_exposed(comp)
    comp.close_db()
    from .web import serve

    serve(path, host=a.host, port=a.port, wait=a.wait, workers=a.workers)
    return 0


def cmd_rescore(a):
    comp = find_competition(a.dir, wait=a.wait)
    res = comp.rescore()
    print(f"rescored {res['rescored']} submissions as a new run ({res['changed']} changed); earlier runs kept")
    return 0


def cmd_verify(a):
    comp = find_competition(a.dir, wait=a.wait)
    findings = comp.verify_findings(sample=a.sample)
    if a.repair:
        for f in findings:
            print(f"found: {f}")
        for line in comp.repair():
            print(f"repaired: {line}")
        findings = comp.verify_findings(sample=a.sample)
        if findings:
            print("still wrong after the repair (not repairable automatically):")
    for f in findings:
        print(f"  {f}" if a.repair else str(f))
    n = comp.con.execute("SELECT COUNT(*) FROM submissions").fetchone()[0]
    n_events = comp.con.execute("SELECT COUNT(*) FROM events").fetchone()[0]
    scored = "all" if not a.sample else f"a sample of up to {a.sample}"
    print(f"{n} archived submissions, {n_events} events, {scored} rescored: {len(findings)} problem(s)"
          + ("" if not findings or a.repair else "; `verify --repair` moves orphans aside, removes "
             "temporary files, restores lost archive files from their copies, gives the folders their write "
             "permission back and rewrites the log"))
    return EXIT_PROBLEMS if findings else EXIT_OK


def cmd_log(a):
    comp = find_competition(a.dir, wait=a.wait)
    for e in comp.events(limit=a.tail):
        extra = {k: v for k, v in e["detail"].items() if k not in ("ranking",)}
        who = f" team={e['team']}" if e["team"] else ""
        sid = f" #{e['submission_id']}" if e["submission_id"] else ""
        print(f"{e['at']} {e['actor']}:{e['action']}{who}{sid} {json.dumps(extra, ensure_ascii=False)}")
    return 0


def cmd_writeup(a):
    comp = find_competition(a.dir, wait=a.wait)
    if a.file == "-":
        text = sys.stdin.buffer.read()
    else:
        path = Path(a.file)
        if not path.is_file():
            raise LeaderboardError(f"no such file: {a.file}")
        text = path.read_bytes()
    res = comp.set_writeup(text, a.team, via="cli")  # main() maps the refusals to exit codes 1, 2 and 5
    print(f"Saved the write-up of {_clip(res['team'])}: {res['bytes']:,} bytes, attached to submission "
          f"#{res['submission_id']}" + (f" ({_clip(res['title'], 40)})" if res["title"] else ""))
    return EXIT_OK


def cmd_writeups_open(a):
    comp = find_competition(a.dir, wait=a.wait)
    value = comp.set_writeups_open(None if a.when.lower() in ("close", "none") else a.when)
    print(f"write-ups open: {short_time(value) if value else 'at close'}")
    return EXIT_OK


def cmd_intervals(a):
    comp = find_competition(a.dir, wait=a.wait)
    on = comp.set_public_intervals(a.state == "on")
    print(f"public 95% intervals: {'on' if on else 'off'}")
    return EXIT_OK


def cmd_deadline(a):
    comp = find_competition(a.dir, wait=a.wait)
    value = comp.set_deadline(None if a.when.lower() == "none" else a.when)
    print(f"deadline: {short_time(value) if value else 'none'}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="tmr-leaderboard",
        description="Local Kaggle-style leaderboard for in-house competitions (TMR Kit).",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--dir", help="competition directory (default: $TMR_LEADERBOARD or the only one under ./competitions)")
    common.add_argument("--wait", type=float, default=None, metavar="SECONDS",
                        help="how long to wait for a busy database before giving up with exit code 3 "
                             "(default: $TMR_LEADERBOARD_WAIT or 60)")

    _init_command(sub)
    _host_commands(sub, common)
    _team_commands(sub, common)
    _admin_commands(sub, common)
    return p


def _init_command(sub) -> None:
    s = sub.add_parser("init", help="create a competition from a dataset's host folder", parents=[],
                       description="Create a competition (self-contained directory) from a host folder "
                                   "(answers.csv, host.json) and its participant folder.")
    s.add_argument("host_dir", help="the dataset's host folder, e.g. data/tmr-cpu-host")
    s.add_argument("--data", help="participant folder (default: host.json's participant_dir)")
    s.add_argument("--dir", help="where to create it (default: competitions/<name>)")
    s.add_argument("--name", help="competition name (default: host.json's name)")
    s.add_argument("--public-fraction", type=float, default=0.3, help="share of test queries on the public board (default 0.3)")
    s.add_argument("--seed", type=int, help="seed of the public/private split (default: random, stored)")
    s.add_argument("--daily-limit", type=int, default=5, help="scored submissions per team per day (default 5)")
    s.add_argument("--reset-utc", default="00:00", help="time of day (UTC) when daily counts reset (default 00:00)")
    s.add_argument("--final", type=int, default=2, help="final selections per team (default 2)")
    s.add_argument("--deadline", help="last moment to submit, ISO 8601, e.g. 2025-03-14T09:00Z (default: none)")
    s.add_argument("--team", action="append", help="register a team (repeat); its token is printed")
    s.add_argument("--reject-limit", type=int, default=20,
                   help="rejected files (invalid, too large) a team may send per window before later ones wait "
                        "(default 20; 0 = no limit)")
    s.add_argument("--reject-window", type=int, default=60, metavar="MINUTES",
                   help="the window of --reject-limit in minutes (default 60)")
    s.add_argument("--writeups-open", metavar="ISO-TIME",
                   help="when teams may attach write-ups, e.g. 2025-03-14T12:00Z (default: at close)")
    s.add_argument("--intervals", action="store_true",
                   help="show each public score's 95%% bootstrap interval on the public board")
    s.set_defaults(func=cmd_init)


def _host_commands(sub, common) -> None:
    s = sub.add_parser("add-team", parents=[common], help="register team(s) and print their tokens")
    s.add_argument("name", nargs="+")
    s.add_argument("--reset-token", action="store_true", help="issue a new token for an existing team")
    s.set_defaults(func=cmd_add_team)

    s = sub.add_parser("teams", parents=[common], help="list teams")
    s.set_defaults(func=cmd_teams)

    s = sub.add_parser("host-token", parents=[common], help="issue a new host token")
    s.set_defaults(func=cmd_host_token)


def _team_commands(sub, common) -> None:
    s = sub.add_parser("submit", parents=[common], help="validate, score and record a submission file")
    s.add_argument("file")
    s.add_argument("--team", required=True)
    s.add_argument("--note", help="a short note shown in the team's history")
    s.set_defaults(func=cmd_submit)

    s = sub.add_parser("check", parents=[common], help="validate a file only (no score, no quota)")
    s.add_argument("file")
    s.set_defaults(func=cmd_check)

    s = sub.add_parser("show", parents=[common], help="print the public board (and the final ranking once closed)")
    s.add_argument("--private", action="store_true", help="host: also print the private ranking before close")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_show)

    s = sub.add_parser("history", parents=[common], help="a team's submissions")
    s.add_argument("--team", required=True)
    s.set_defaults(func=cmd_history)

    s = sub.add_parser("writeup", parents=[common],
                       help="attach a Markdown write-up (8 kB at most) to a team's final submission",
                       description="Attach (or replace) a team's write-up. Accepted after close, or from the "
                                   "host's --writeups-open time; before that: exit code 5 and when it opens.")
    s.add_argument("file", help="a UTF-8 Markdown file, or - for standard input")
    s.add_argument("--team", required=True)
    s.set_defaults(func=cmd_writeup)

    s = sub.add_parser("select", parents=[common], help="choose a team's final submissions")
    s.add_argument("--team", required=True)
    s.add_argument("ids", nargs="*", type=int, help="submission numbers")
    s.add_argument("--clear", action="store_true", help="no selection: the best public submission counts")
    s.set_defaults(func=cmd_select)


def _admin_commands(sub, common) -> None:
    s = sub.add_parser("close", parents=[common], help="freeze the competition and reveal the private ranking")
    s.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    s.set_defaults(func=cmd_close)

    s = sub.add_parser("deadline", parents=[common], help="set or clear (none) the deadline")
    s.add_argument("when", help="ISO 8601 time, e.g. 2025-03-14T09:00Z, or 'none'")
    s.set_defaults(func=cmd_deadline)

    s = sub.add_parser("writeups-open", parents=[common], help="set when write-ups open, or 'close' (the default)")
    s.add_argument("when", help="ISO 8601 time, e.g. 2025-03-14T12:00Z, or 'close'")
    s.set_defaults(func=cmd_writeups_open)

    s = sub.add_parser("intervals", parents=[common], help="show (on) or hide (off) 95%% intervals on the public board")
    s.add_argument("state", choices=("on", "off"))
    s.set_defaults(func=cmd_intervals)

    s = sub.add_parser("export", parents=[common],
                       help="write board.html, formula-safe CSVs, the race plots and (after close) booklet.html")
    s.add_argument("--out", help="output folder (default: <competition>/export)")
    s.add_argument("--private", action="store_true", help="include the private ranking before close (host)")
    s.set_defaults(func=cmd_export)

    s = sub.add_parser("serve", parents=[common], help="run the web app (upload form, board, history)")
    s.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1; 0.0.0.0 for the LAN)")
    s.add_argument("--port", type=int, default=8000)
    s.add_argument("--workers", type=int, default=1, metavar="N",
                   help="processes that validate uploads, so a flood of huge files keeps the pages fast "
                        "(default 1; 0 = in the server process)")
    s.set_defaults(func=cmd_serve)

    s = sub.add_parser("rescore", parents=[common], help="score every archived file again as a new run")
    s.set_defaults(func=cmd_rescore)

    s = sub.add_parser("verify", parents=[common],
                       help="check archive, database, log and scores against each other (exit 4 on problems)")
    s.add_argument("--repair", action="store_true",
                   help="move orphan files aside (never deleted), remove temporary files, rewrite the log "
                        "from the database, then verify again")
    s.add_argument("--sample", type=int, default=20, help="how many archived files to rescore (0 = all; default 20)")
    s.set_defaults(func=cmd_verify)

    s = sub.add_parser("log", parents=[common], help="print the append-only event log")
    s.add_argument("--tail", type=int, help="only the last N events")
    s.set_defaults(func=cmd_log)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not hasattr(args, "wait"):
        args.wait = None
    try:
        return args.func(args)
    except DatabaseBusy as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BUSY
    except WriteupsNotOpen as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_NOT_YET
    except InvalidWriteup as exc:
        print(f"rejected: {exc}", file=sys.stderr)
        return EXIT_REJECTED
    except StorageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_STORAGE
    except (sqlite3.Error, OSError) as exc:
        if is_busy_error(exc):
            print(f"error: {DatabaseBusy(args.wait if args.wait is not None else default_wait())}", file=sys.stderr)
            return EXIT_BUSY
        err = storage_error(exc)
        if err is None:
            raise
        print(f"error: {err}", file=sys.stderr)
        return EXIT_STORAGE
    except LeaderboardError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
