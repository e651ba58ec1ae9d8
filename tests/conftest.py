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


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread: on a shared 2-core machine, two spinning threads per process slow the tiny
    models' convolutions 10-60x (measured: 984 images embedded in 0.2 s with one thread, 8-12 s with two)."""
    import contextlib

    import torch

    import tmr_lib.train

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(tmr_lib.train, "_cpu_threads", lambda device, workers: contextlib.nullcontext())
        yield
    torch.set_num_threads(before)
