"""Board page latency while one team floods the leaderboard with invalid 8 MB files (issue 16's target).

    python benchmarks/bench_leaderboard_flood.py              # 50 files of 8 MB, 3 posters, 400 idle GETs
    python benchmarks/bench_leaderboard_flood.py --quick      # 8 files, 2 posters, 120 idle GETs
    python benchmarks/bench_leaderboard_flood.py --workers 0  # validate inside the server process (the old way)
    python benchmarks/bench_leaderboard_flood.py --compare    # both, one after the other, in one table

The real server (``python -m leaderboard serve`` in its own process, 127.0.0.1) serves a small
competition: 600 test queries, 3,000 cites, five teams with a few scored submissions each, and
no limit on rejected files (``--reject-limit 0``), so every one of the files is read and
validated: the worst case. The bench first times N sequential ``GET /`` (the board page; a new
connection each), then times ``GET /`` in a bounded loop while a few poster processes send the
invalid files to ``/api/submit`` as the notebook does (multipart, Bearer token). The files
cycle through four shapes of just under 8 MiB: 2.8M tiny rows, 2,150 rows of 353 ids (under the
early line cap: read line by line), one 8 MB line and a valid file's rows repeated.
Target: the flood p95 within 2x the idle p95, every file rejected (422), no quota used.
"""

from __future__ import annotations

import http.client
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

from _common import ROOT, Report, parser  # noqa: E402  (puts the repository on sys.path)

sys.path.insert(0, str(ROOT / "tests" / "leaderboard_fixtures"))
from lbfix import make_dataset, ranked_lists, write_csv  # noqa: E402

SIZE = 8 * 1024 * 1024 - 4096  # just under the competition's 8 MiB cap: every file is read and validated
SHAPES = ("tiny rows", "wide rows", "one line", "repeated rows")


def build(root: Path) -> tuple[Path, dict[str, str], dict]:
    """A 600-query competition with five teams and a few scored submissions each."""
    import random

    from leaderboard import Competition

    ds = make_dataset(root / "data", n_test=600, n_cite=3000, name="tmr-flood")
    teams = ["alpha", "beta", "gamma", "delta", "epsilon"]
    comp, tokens = Competition.create(ds["host"], path=root / "comp", teams=teams, seed=7, daily_limit=10,
                                      reject_limit=0)
    rng = random.Random(3)
    for k, team in enumerate(teams):
        for j in range(2):
            hits = {g: (rng.randint(1, 20) if rng.random() < 0.7 - 0.1 * k else None) for g in ds["test"]}
            comp.submit(write_csv(root / f"s{k}{j}.csv", ranked_lists(ds, hits, seed=10 * k + j)), team)
    comp.close_db()
    return root / "comp", tokens, ds


def bad_file(shape: str, test: list[str], others: list[str]) -> bytes:
    """One invalid file of just under 8 MiB."""
    head = b"gid,cite_gid\n"
    if shape == "tiny rows":
        body = b"1,\n" * ((SIZE - len(head)) // 3)
    elif shape == "wide rows":
        ids = " ".join((others * 2)[:353]).encode()
        rows = [test[i % len(test)].encode() + b"," + ids + b"\n" for i in range(2150)]
        body = b"".join(rows)[: SIZE - len(head)]
    elif shape == "one line":
        body = b"1," + b"1000000001 " * ((SIZE - len(head)) // 11 - 1)
    else:
        rows = b"".join(f"{g},{' '.join(others[:20])}\n".encode() for g in test)
        body = (rows * (SIZE // len(rows) + 1))[: SIZE - len(head)]
    return head + body


def multipart(data: bytes, filename: str) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    body = (f'--{boundary}\r\nContent-Disposition: form-data; name="note"\r\n\r\nflood\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
            "Content-Type: text/csv\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


_FILES: dict[str, bytes] = {}


def post(args: tuple[int, int, str, list[str], list[str], int]) -> tuple[int, float]:
    """(HTTP status, seconds) of one upload; runs in a poster process (bodies cached per process)."""
    port, k, token, test, others, _ = args
    shape = SHAPES[k % len(SHAPES)]
    if shape not in _FILES:
        _FILES[shape] = bad_file(shape, test, others)
    body, ctype = multipart(_FILES[shape], f"flood_{k}.csv")
    t0 = time.perf_counter()
    con = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    try:
        con.request("POST", "/api/submit", body=body, headers={"Content-Type": ctype,
                                                               "Authorization": f"Bearer {token}"})
        status = con.getresponse().status
    finally:
        con.close()
    return status, time.perf_counter() - t0


def warm(args: tuple[list[str], list[str]]) -> None:
    """Build every shape in this poster process before the clock runs."""
    for shape in SHAPES:
        _FILES.setdefault(shape, bad_file(shape, *args))
    time.sleep(0.5)  # long enough that each poster process takes one


def get_board(port: int) -> float:
    """Seconds for one GET / on a new connection (status and body checked)."""
    t0 = time.perf_counter()
    con = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        con.request("GET", "/")
        resp = con.getresponse()
        body = resp.read()
    finally:
        con.close()
    if resp.status != 200 or b"alpha" not in body:
        raise RuntimeError(f"GET / answered {resp.status}")
    return time.perf_counter() - t0


def p95(xs: list[float]) -> float:
    return statistics.quantiles(xs, n=100, method="inclusive")[94] if len(xs) > 1 else xs[0]


def start_server(comp: Path, workers: int | None) -> tuple[subprocess.Popen, int]:
    cmd = [sys.executable, "-m", "leaderboard", "serve", "--dir", str(comp), "--port", "0"]
    if workers is not None:
        cmd += ["--workers", str(workers)]
    env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = proc.stdout.readline()
    m = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
    if not m:
        proc.kill()
        raise SystemExit(f"the server did not start: {line!r}")
    return proc, int(m.group(1))


def flood(port: int, token: str, ds: dict, n_files: int, n_posters: int, limit_s: float) -> dict:
    """Time GET / in a loop while the posters send ``n_files`` invalid files; bounded by ``limit_s``."""
    test, others = ds["test"], ds["others"]
    lat: list[float] = []
    with ProcessPoolExecutor(n_posters, mp_context=get_context("spawn")) as pool:
        list(pool.map(warm, [(test, others)] * n_posters))  # start the posters (and build the files) first
        t0 = time.perf_counter()
        futures = [pool.submit(post, (port, k, token, test, others, 0)) for k in range(n_files)]
        while not all(f.done() for f in futures) and time.perf_counter() - t0 < limit_s:
            lat.append(get_board(port))
            time.sleep(0.005)
        wall = time.perf_counter() - t0
        results = [f.result() for f in futures]
    return {"lat": lat, "wall": wall, "statuses": [s for s, _ in results], "post_s": [t for _, t in results]}


def check_after(comp: Path, n_files: int) -> tuple[bool, str]:
    """Every file logged as a rejection, nothing recorded, no quota used."""
    from leaderboard import Competition

    with Competition(comp) as c:
        ev = [e for e in c.events() if e["action"] == "rejected" and e["team"] == "alpha"]
        n_sub = c.con.execute("SELECT COUNT(*) FROM submissions").fetchone()[0]
        used = c.used_today(c.team("alpha")["id"])
        problems = c.verify(sample=0)
    ok = len(ev) == n_files and n_sub == 10 and used == 2 and not problems
    return ok, f"{len(ev)} rejected events, {n_sub} submissions (10 before), alpha used {used} today (2 before), " \
               f"verify: {len(problems)} problem(s)"


def measure(workers: int | None, n_files: int, n_posters: int, n_idle: int, quick: bool) -> dict:
    """One run on a fresh competition and server: idle GETs, then GETs during the flood, then the checks."""
    with tempfile.TemporaryDirectory(prefix="tmr-flood-") as tmp:
        comp, tokens, ds = build(Path(tmp))
        proc, port = start_server(comp, workers)
        try:
            for _ in range(20):
                get_board(port)  # warm-up: imports, templates, the scorer
            idle = [get_board(port) for _ in range(n_idle)]
            res = flood(port, tokens["alpha"], ds, n_files, n_posters, limit_s=120 if quick else 560)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
        res["ok_after"], res["after"] = check_after(comp, n_files)
    res["idle"] = idle
    return res


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--files", type=int, help="invalid files in the flood (default 50; quick 8)")
    ap.add_argument("--posters", type=int, help="concurrent poster processes (default 3; quick 2)")
    ap.add_argument("--idle", type=int, help="idle GET / requests (default 400; quick 120)")
    ap.add_argument("--workers", type=int, default=None,
                    help="the server's --workers (validation processes; 0 = in the server process)")
    ap.add_argument("--compare", action="store_true",
                    help="then the same flood with --workers 0 (validation in the server process), side by side")
    args = ap.parse_args()
    n_files = args.files or (8 if args.quick else 50)
    n_posters = args.posters or (2 if args.quick else 3)
    n_idle = args.idle or (120 if args.quick else 400)
    rep = Report("Leaderboard under a flood of invalid uploads (issue 16)", args.quick, args.results)
    res = measure(args.workers, n_files, n_posters, n_idle, args.quick)
    report(rep, res, n_files, n_posters, args.workers)
    if args.compare:
        base = measure(0, n_files, n_posters, n_idle, args.quick)
        i95, f95 = p95(base["idle"]) * 1e3, p95(base["lat"]) * 1e3
        rep.row("the same flood, validation in the server process (--workers 0): p95 flood vs idle", f95, i95, "ms",
                ratio=f95 / i95, target="(for comparison)")
        rep.row("  its flood wall time; files rejected with 422", f"{base['wall']:.1f} s; "
                f"{sum(s == 422 for s in base['statuses'])} of {n_files}")
    rep.finish()


def report(rep: Report, res: dict, n_files: int, n_posters: int, workers: int | None) -> None:
    idle, lat, statuses = res["idle"], res["lat"], res["statuses"]
    ok_after, after = res["ok_after"], res["after"]
    i95, f95 = p95(idle) * 1e3, p95(lat) * 1e3
    ratio = f95 / i95
    rep.row("GET / (board page) p95, under the flood vs idle", f95, i95, "ms", ratio=ratio, target="<= 2.0x",
            ok=ratio <= 2.0)
    rep.row("GET / p50, under the flood vs idle", statistics.median(lat) * 1e3, statistics.median(idle) * 1e3, "ms",
            ratio=statistics.median(lat) / statistics.median(idle))
    rep.row("GET / max, under the flood vs idle", max(lat) * 1e3, max(idle) * 1e3, "ms")
    rep.row("board requests timed during the flood / idle", f"{len(lat)} / {len(idle)}")
    rep.row("flood: files, wall time, files/s", f"{n_files} x 8 MB in {res['wall']:.1f} s "
            f"({n_files / res['wall']:.1f}/s; {n_posters} posters)")
    rep.row("upload round trip p50 / max", f"{statistics.median(res['post_s']):.2f} s / {max(res['post_s']):.2f} s")
    n422 = sum(s == 422 for s in statuses)
    rep.row("files rejected with 422 (every problem listed, no quota)", f"{n422} of {n_files}", target="all",
            ok=n422 == n_files)
    rep.row("afterwards: rejections logged, nothing recorded, verify clean", after, target="yes", ok=ok_after)
    how = ("the server's default" if workers is None else
           "validation in the server process" if workers == 0 else f"{workers} validation process(es)")
    rep.note(f"Server: `python -m leaderboard serve` in its own process ({how}); 600 test queries, 3,000 cites, "
             "5 teams x 2 scored submissions; --reject-limit 0 so every file is read and validated (worst case). "
             f"Files cycle through {', '.join(SHAPES)} (each just under 8 MiB). GET / on a new connection each, "
             "5 ms apart during the flood.")


if __name__ == "__main__":
    main()
