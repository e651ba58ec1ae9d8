"""Shared fixtures: one `ci` competition built per test session (a few seconds)."""
from __future__ import annotations

import os

import pytest

os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture(scope="session")
def ci_dataset(tmp_path_factory):
    """(participant_dir, host_dir) of a `ci` competition, seed 0, built once per session."""
    from tmr_lib.builder import build_competition

    root = tmp_path_factory.mktemp("ci-data")
    return build_competition(root / "tmr-ci", preset="ci", seed=0, progress=False)


@pytest.fixture(scope="session")
def ci_competition(ci_dataset):
    from tmr_lib.data import load_competition

    return load_competition(ci_dataset[0])
