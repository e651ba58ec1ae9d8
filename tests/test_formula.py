"""Formula-driven images for the teaching start: seeded, distinct categories, near-duplicate
instances, black ink on white, and not a single mark touched."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from tmr_lib import formula as F


@pytest.fixture(scope="module")
def pool():
    return F.render_pool(9, 3, size=64, seed=0)


def test_pool_shape_and_deterministic_for_a_seed(pool):
    imgs, labels = pool
    assert imgs.shape == (27, 3, 64, 64) and imgs.dtype == np.uint8
    assert (labels == np.repeat(np.arange(9), 3)).all()
    again, _ = F.render_pool(9, 3, size=64, seed=0)
    assert (again == imgs).all()
    other, _ = F.render_pool(9, 3, size=64, seed=1)
    assert np.abs(other.astype(int) - imgs.astype(int)).mean() > 5
    gray, _ = F.render_pool(9, 3, size=64, seed=0, channels=1)
    assert gray.shape == (27, 1, 64, 64) and (gray[:, 0] == imgs[:, 1]).all()


def test_black_ink_on_white_paper_every_kind(pool):
    imgs = pool[0][:, 0].astype(float) / 255
    ink = (imgs < 0.5).mean(axis=(1, 2))
    assert (ink > 0.02).all() and (ink < 0.75).all()  # neither empty nor a blob
    border = np.concatenate([imgs[:, 0], imgs[:, -1], imgs[:, :, 0], imgs[:, :, -1]], axis=1)
    assert border.mean() > 0.9  # paper around the shape
    assert {F.category_params(c)["kind"] for c in range(3)} == set(F.KINDS)


def test_instances_are_close_but_not_identical_and_categories_differ(pool):
    x = pool[0][:, 0].astype(float).reshape(9, 3, -1) / 255
    within = [np.abs(x[c, 0] - x[c, i]).mean() for c in range(9) for i in (1, 2)]
    between = [np.abs(x[c, 0] - x[d, 0]).mean() for c in range(9) for d in range(9) if c != d]
    assert min(within) > 0  # a jittered re-render, not a copy
    assert np.mean(within) < 0.5 * np.mean(between)
    for c in range(9):  # each instance is nearer its own category's render than any other category's
        for i in (1, 2):
            own = np.abs(x[c, 0] - x[c, i]).mean()
            assert own < min(np.abs(x[d, 0] - x[c, i]).mean() for d in range(9) if d != c)


def test_the_pool_never_touches_a_mark():
    """Rendering a pool imports neither the mark catalogue nor the scene builder."""
    code = ("import sys; from tmr_lib import formula; formula.render_pool(3, 2, 32); "
            "print(sorted(m for m in sys.modules if m in ('tmr_lib.marks', 'tmr_lib.scenes', 'tmr_lib.builder')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_render_speed_is_reported_per_kind():
    speed = F.render_speed(n_categories=2, per_category=2, size=32)
    assert set(speed) == set(F.KINDS) and all(v > 0 for v in speed.values())
