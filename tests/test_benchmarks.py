"""Every benchmark's --quick mode runs, prints its table and appends it to a RESULTS file (so they cannot rot).

The real benchmarks/RESULTS.md is never touched: each run gets ``--results`` in a temporary folder.
These are not timing tests: nothing here asserts a speed.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"
SCRIPTS = ["bench_scoring.py", "bench_builder.py", "bench_search.py", "bench_embed.py", "bench_query.py",
           "bench_leaderboard_flood.py", "bench_recipes.py", "bench_learning.py", "bench_scale.py"]
NEEDS_CI_DATA = {"bench_search.py", "bench_embed.py", "bench_query.py", "bench_learning.py", "bench_scale.py"}


@pytest.fixture(scope="module")
def bench_env(ci_dataset, tmp_path_factory):
    """The session's `ci` competition as --data, and a cache folder shared by the module's runs."""
    cache = tmp_path_factory.mktemp("bench-cache")
    env = dict(os.environ, PYTHONUNBUFFERED="1", TMR_BENCH_CACHE=str(cache), MPLBACKEND="Agg")
    return str(ci_dataset[0]), env


def test_every_benchmark_is_listed():
    assert sorted(p.name for p in BENCH.glob("bench_*.py")) == sorted(SCRIPTS)


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("script", SCRIPTS)
def test_quick_mode_prints_a_table_and_appends_it(script, tmp_path, bench_env):
    data, env = bench_env
    results = tmp_path / "RESULTS.md"
    results.write_text("# earlier results\n", encoding="utf-8")
    cmd = [sys.executable, str(BENCH / script), "--quick", "--results", str(results)]
    if script in NEEDS_CI_DATA:
        cmd += ["--data", data]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=280)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    assert "| measure | ours | baseline | ratio | target | met |" in out
    assert "(quick)" in out and "Load: load average" in out
    text = results.read_text(encoding="utf-8")
    assert text.startswith("# earlier results\n")  # appended, not overwritten
    assert "| measure | ours | baseline | ratio | target | met |" in text
    assert "Machine: " in text


def test_results_dash_prints_only(tmp_path):
    sys.path.insert(0, str(BENCH))
    try:
        from _common import Report
    finally:
        sys.path.remove(str(BENCH))
    rep = Report("t", True, "-")
    rep.row("x", 2.0, 4.0, "s", ratio=2.0, target=">= 2x", ok=True)
    text = rep.finish()
    assert "| x | 2.00 s | 4.00 s | 2.00x | >= 2x | yes |" in text


def test_results_json_is_merged_by_part_and_never_written_by_quick(tmp_path):
    import json

    sys.path.insert(0, str(BENCH))
    try:
        from _common import write_results
    finally:
        sys.path.remove(str(BENCH))
    path = tmp_path / "results" / "x.json"
    assert write_results({"demo": {"r": 1}}, path, None, quick=True) is None and not path.exists()
    write_results({"demo": {"r": 1}}, path, None, quick=False)
    write_results({"ladder": {"r": "日本"}}, path, None, quick=False)  # another part keeps the first
    assert json.loads(path.read_text(encoding="utf-8")) == {"demo": {"r": 1}, "ladder": {"r": "日本"}}
    assert write_results({"demo": {}}, path, "-", quick=False) is None
    assert not list(path.parent.glob("*.tmp"))
