"""What every benchmark shares: the command line, the machine line, the table and RESULTS.md.

A benchmark measures its figure and its baseline side by side in one run and reports rows of
(what, ours, baseline, ratio, target, met). `Report.finish()` prints the table and appends it,
with the date, the machine and its load, to `benchmarks/RESULTS.md` (or `--results PATH`).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import platform
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

RESULTS = ROOT / "benchmarks" / "RESULTS.md"
#: caches (embeddings, tuned indexes): git-ignored via /data/*; TMR_BENCH_CACHE moves it (the tests do)
BENCH_DIR = Path(os.environ.get("TMR_BENCH_CACHE") or ROOT / "data" / ".bench")


def competition_dir(data: str | None, quick: bool) -> str:
    """The competition a benchmark reads: ``data`` if given, else ``data/tmr-ci`` (quick: built here in
    seconds when missing, so ``--quick`` runs on a fresh clone) or ``data/tmr-full`` (built by hand:
    ~16 min, the message says how)."""
    if data:
        if not (ROOT / data / "cite_v2.csv").is_file() and not Path(data, "cite_v2.csv").is_file():
            raise SystemExit(f"{data} is not a competition folder (no cite_v2.csv)")
        return data
    size = "ci" if quick else "full"
    data = f"data/tmr-{size}"
    if (ROOT / data / "cite_v2.csv").is_file():
        return data
    if quick:
        from tmr_lib.builder import ensure_dataset

        print(f"{data} is missing: building it (a few seconds)", flush=True)
        ensure_dataset(size, ROOT / data, progress=False)
        return data
    raise SystemExit(f"{data} is missing: build it first (python -m tmr_lib data build --size {size} --out {data}; "
                     "about 16 minutes), or pass --data with another competition")


def commit() -> str:
    """The short commit the figures were measured on (written into every results file)."""
    import subprocess

    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def write_results(entries: dict, default: Path, choice: str | None, quick: bool) -> Path | None:
    """Merge ``entries`` (top-level keys, e.g. one per part) into a committed results JSON, atomically.

    ``choice`` is the script's ``--json``: a path, '-' to skip, or None for ``default`` (never written
    by a --quick run, whose figures are not the ones to keep)."""
    import json

    target = choice or ("-" if quick else str(default))
    if target == "-":
        return None
    path = Path(target)
    old = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    old.update(entries)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(old, indent=2, default=str, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    print(f"wrote {path}")
    return path


def parser(doc: str) -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small sizes, runs in well under a minute (for the tests)")
    ap.add_argument("--results", default=str(RESULTS), help="the Markdown file the table is appended to "
                    "(default benchmarks/RESULTS.md); '-' prints only")
    return ap


def machine() -> str:
    import numpy as np

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    mem = ""
    try:
        kb = int(next(l for l in Path("/proc/meminfo").read_text().splitlines() if l.startswith("MemTotal")).split()[1])
        mem = f", {kb / 2**20:.0f} GiB RAM"
    except (OSError, StopIteration, ValueError):
        pass
    extra = []
    for mod in ("torch", "faiss", "sklearn"):
        m = sys.modules.get(mod)
        if m is not None:
            extra.append(f"{mod} {getattr(m, '__version__', '?')}")
    if os.environ.get("OPENBLAS_CORETYPE"):
        extra.append(f"OPENBLAS_CORETYPE={os.environ['OPENBLAS_CORETYPE']}")
    return (f"{cpu}, {n} CPU cores{mem}; {platform.system()} {platform.release()}; python "
            f"{platform.python_version()}, numpy {np.__version__}" + (", " + ", ".join(extra) if extra else ""))


def load() -> str:
    try:
        return "load average %.2f / %.2f / %.2f" % os.getloadavg()
    except OSError:
        return "load average n/a"


def fmt(x, unit: str = "") -> str:
    if x is None:
        return "-"
    if isinstance(x, str):
        return x
    ax = abs(x)
    if ax >= 1000:
        s = f"{x:,.0f}"
    elif ax >= 100:
        s = f"{x:.0f}"
    elif ax >= 10:
        s = f"{x:.1f}"
    elif ax >= 1:
        s = f"{x:.2f}"
    else:
        s = f"{x:.3g}"
    return s + (f" {unit}" if unit else "")


@dataclass
class Row:
    what: str
    ours: str
    baseline: str = "-"
    ratio: str = "-"
    target: str = "-"
    met: str = "-"


@dataclass
class Report:
    title: str
    quick: bool
    results: str
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    t0: float = field(default_factory=time.perf_counter)
    load_start: str = field(default_factory=load)

    def row(self, what, ours, baseline=None, unit="", *, ratio=None, target=None, ok=None, ours_s=None,
            base_s=None):
        """Add a row. `ratio` is a number (shown as 4.2x); `ok` True/False/None -> yes/NO/-."""
        self.rows.append(Row(
            what,
            ours_s if ours_s is not None else fmt(ours, unit),
            base_s if base_s is not None else (fmt(baseline, unit) if baseline is not None else "-"),
            f"{ratio:.2f}x" if isinstance(ratio, (int, float)) else (ratio or "-"),
            target or "-",
            "-" if ok is None else ("yes" if ok else "NO"),
        ))

    def note(self, text: str) -> None:
        self.notes.append(text)

    def table(self) -> str:
        head = ["measure", "ours", "baseline", "ratio", "target", "met"]
        rows = [[r.what, r.ours, r.baseline, r.ratio, r.target, r.met] for r in self.rows]
        lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
        lines += ["| " + " | ".join(c.replace("|", "/") for c in r) + " |" for r in rows]
        return "\n".join(lines)

    def finish(self) -> str:
        wall = time.perf_counter() - self.t0
        stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        mode = "quick" if self.quick else "full"
        text = "\n".join([
            f"## {self.title} ({mode}) - {stamp}",
            "",
            f"Machine: {machine()}.",
            f"Load: {self.load_start} at start, {load()} at end; run took {wall:.0f} s.",
            "",
            self.table(),
            "",
            *[f"- {n}" for n in self.notes],
            "",
        ])
        print(text)
        if self.results and self.results != "-":
            path = Path(self.results)
            path.parent.mkdir(parents=True, exist_ok=True)
            new = not path.exists() or path.stat().st_size == 0
            with path.open("a", encoding="utf-8") as f:
                if new:
                    f.write("# Benchmark results\n\nAppended by the scripts in `benchmarks/` "
                            "(newest last). Ratios are measured side by side in one run.\n\n")
                f.write(text + "\n")
            print(f"appended to {path}")
        return text


# --------------------------------------------------------------------------- memory


def _tree_pids(root: int) -> list[int]:
    kids: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            stat = Path(f"/proc/{d}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        kids.setdefault(ppid, []).append(int(d))
    out, todo = [], [root]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(kids.get(p, []))
    return out


def rss_bytes(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def tree_rss(pid: int | None = None) -> int:
    """Resident memory of a process and all its descendants, bytes."""
    return sum(rss_bytes(p) for p in _tree_pids(pid or os.getpid()))


class PeakMemory:
    """Sample the resident memory of this process (and its children, `tree=True`) in a thread.

        with PeakMemory() as m: work()
        m.peak, m.base   # bytes
    """

    def __init__(self, tree: bool = True, every: float = 0.1):
        self.tree, self.every = tree, every
        self.peak = self.base = 0
        self._stop = threading.Event()

    def _sample(self) -> int:
        return tree_rss() if self.tree else rss_bytes(os.getpid())

    def _run(self):
        while not self._stop.wait(self.every):
            self.peak = max(self.peak, self._sample())

    def __enter__(self):
        self.base = self.peak = self._sample()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, self._sample())
        return False


def gib(b: float) -> float:
    return b / 2**30


def mib(b: float) -> float:
    return b / 2**20
