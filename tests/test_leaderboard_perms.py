"""The answers stay owner-only: the built host folder, and warnings from `init` / `serve`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "leaderboard_fixtures"))
from lbfix import make_dataset  # noqa: E402

from leaderboard.storage import exposed_to_others  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")


def mode(p: Path) -> int:
    return p.stat().st_mode & 0o777


def test_builder_writes_the_host_folder_owner_only(ci_dataset):
    _, host = ci_dataset
    assert mode(host) == 0o700
    files = [p for p in host.rglob("*") if p.is_file()]
    assert any(p.name == "answers.csv" for p in files)
    assert {mode(p) for p in files} == {0o600}


def test_owner_only_function(tmp_path):
    from tmr_lib.builder import owner_only

    (tmp_path / "h" / "sub").mkdir(parents=True)
    (tmp_path / "h" / "answers.csv").write_text("x")
    (tmp_path / "h" / "sub" / "f").write_text("y")
    os.chmod(tmp_path / "h", 0o755)
    owner_only(tmp_path / "h")
    assert [mode(tmp_path / "h"), mode(tmp_path / "h" / "sub")] == [0o700, 0o700]
    assert mode(tmp_path / "h" / "answers.csv") == mode(tmp_path / "h" / "sub" / "f") == 0o600


def test_exposed_to_others(tmp_path):
    d = tmp_path / "host"
    d.mkdir()
    (d / "answers.csv").write_text("x")
    os.chmod(d, 0o755)
    os.chmod(d / "answers.csv", 0o644)
    assert "readable by other users" in exposed_to_others(d, ["answers.csv"])
    os.chmod(d / "answers.csv", 0o600)
    os.chmod(d, 0o711)
    assert exposed_to_others(d, ["answers.csv"]) == ""
    os.chmod(d, 0o700)
    os.chmod(d / "answers.csv", 0o644)
    assert exposed_to_others(d, ["answers.csv"]) == ""


def test_init_and_serve_warn_about_a_world_readable_host_folder(tmp_path, monkeypatch, capsys):
    ds = make_dataset(tmp_path / "data", n_test=40, n_cite=200, name="tmr-p")
    os.chmod(ds["host"], 0o755)
    os.chmod(ds["host"] / "answers.csv", 0o644)
    env = {"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}
    p = subprocess.run([sys.executable, "-m", "leaderboard", "init", str(ds["host"]), "--team", "a"], cwd=tmp_path,
                       capture_output=True, text=True, timeout=120, env=env)
    assert p.returncode == 0, p.stderr
    assert f"warning: {ds['host']} is readable by other users" in p.stderr and "chmod -R go-rwx" in p.stderr
    comp = tmp_path / "competitions" / "tmr-p"
    assert mode(comp) == 0o700 and str(comp) not in p.stderr  # the competition folder itself is private
    os.chmod(comp, 0o755)
    os.chmod(comp / "leaderboard.sqlite3", 0o644)
    import leaderboard.web
    from leaderboard import cli

    monkeypatch.setattr(leaderboard.web, "serve", lambda *a, **k: None)  # the warning, not a server
    monkeypatch.chdir(tmp_path)
    assert cli.main(["serve"]) == 0
    err = capsys.readouterr().err
    assert "warning: competitions/tmr-p is readable by other users" in err
    assert f"warning: {ds['host'].resolve()} is readable" in err
